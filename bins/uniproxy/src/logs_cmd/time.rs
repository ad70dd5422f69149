//! Times on the command line: UTC ISO-8601 out, RFC 3339, unix milliseconds
//! and durations in. Dates read are checked and counted by the `time` crate
//! (which the request log uses too); dates written are Howard Hinnant's
//! `civil_from_days`, which takes any millisecond, not only `time`'s years.

const MS_PER_DAY: i64 = 86_400_000;

/// A time or duration argument that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TimeError {
    /// Not a duration.
    #[error("`{0}` is not a duration (such as 90s, 15m, 2h, 7d or 1h30m)")]
    Duration(String),
    /// Not a time.
    #[error(
        "`{0}` is not a time (RFC 3339 such as 2025-01-31T12:00:00Z, a date such as 2025-01-31, \
         unix milliseconds, or a duration ago such as 2h)"
    )]
    Time(String),
}

/// Unix milliseconds as `2025-01-31T12:00:00.123Z`.
pub(crate) fn format_utc(ms: i64) -> String {
    let days = ms.div_euclid(MS_PER_DAY);
    let in_day = ms.rem_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = in_day / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        in_day % 1000
    )
}

/// A duration such as `90s`, `15m`, `2h`, `7d`, `1w`, `500ms` or `1h30m`, in ms.
pub(crate) fn parse_duration_ms(s: &str) -> Result<i64, TimeError> {
    let bad = || TimeError::Duration(s.to_owned());
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let units =
            rest[digits..].find(|c: char| c.is_ascii_digit()).map_or(rest.len(), |i| i + digits);
        let (number, unit) = (&rest[..digits], &rest[digits..units]);
        let n: i64 = number.parse().map_err(|_| bad())?;
        let per: i64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => MS_PER_DAY,
            "w" => 7 * MS_PER_DAY,
            _ => return Err(bad()),
        };
        total = n.checked_mul(per).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
        rest = &rest[units..];
    }
    Ok(total)
}

/// A point in time: RFC 3339 (`2025-01-31T12:00:00Z`, `…+02:00`, fractions
/// allowed; no offset means UTC), a date (`2025-01-31`, midnight UTC), unix
/// milliseconds, or a duration meaning that long before `now_ms`.
pub(crate) fn parse_time_ms(s: &str, now_ms: i64) -> Result<i64, TimeError> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| TimeError::Time(s.to_owned()));
    }
    if let Some(ms) = parse_rfc3339(t) {
        return Ok(ms);
    }
    match parse_duration_ms(t) {
        Ok(d) => Ok(now_ms.saturating_sub(d)),
        Err(_) => Err(TimeError::Time(s.to_owned())),
    }
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    let num = |text: &str, from: usize, to: usize| -> Option<i64> {
        let part = text.get(from..to)?;
        if part.bytes().all(|b| b.is_ascii_digit()) { part.parse().ok() } else { None }
    };
    let sep = |text: &str, at: usize, c: &str| text.get(at..=at) == Some(c);
    if !(sep(s, 4, "-") && sep(s, 7, "-")) {
        return None;
    }
    let (y, mo, d) = (num(s, 0, 4)?, num(s, 5, 7)?, num(s, 8, 10)?);
    let month = ::time::Month::try_from(u8::try_from(mo).ok()?).ok()?;
    let date =
        ::time::Date::from_calendar_date(i32::try_from(y).ok()?, month, u8::try_from(d).ok()?)
            .ok()?;
    let days = date.to_julian_day() - ::time::OffsetDateTime::UNIX_EPOCH.to_julian_day();
    let date_ms = i64::from(days) * MS_PER_DAY;
    let rest = s.get(10..)?;
    if rest.is_empty() {
        return Some(date_ms);
    }
    let t = rest.strip_prefix(['T', 't', ' '])?;
    if !sep(t, 2, ":") {
        return None;
    }
    let (h, mi) = (num(t, 0, 2)?, num(t, 3, 5)?);
    let (mut sec, mut frac_ms, mut at) = (0, 0, 5);
    if sep(t, 5, ":") {
        sec = num(t, 6, 8)?;
        at = 8;
        if sep(t, 8, ".") {
            let digits = t.get(9..)?.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            let first3 = t.get(9..9 + digits.min(3))?;
            frac_ms = first3.parse::<i64>().ok()? * 10_i64.pow(3 - digits.min(3) as u32);
            at = 9 + digits;
        }
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let offset_ms = match t.get(at..)? {
        "" | "Z" | "z" => 0,
        zone => {
            let sign = match zone.get(..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            if zone.len() != 6 || !sep(zone, 3, ":") {
                return None;
            }
            let (oh, om) = (num(zone, 1, 3)?, num(zone, 4, 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 60 + om) * 60_000
        }
    };
    Some(date_ms + ((h * 60 + mi) * 60 + sec) * 1000 + frac_ms - offset_ms)
}

/// The date `days` after 1970-01-01, as (year, month, day).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(1_738_324_800_123), "2025-01-31T12:00:00.123Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_times() {
        let now = 1_738_324_800_000;
        assert_eq!(parse_time_ms("2025-01-31T12:00:00Z", 0), Ok(now));
        assert_eq!(parse_time_ms("2025-01-31T14:00:00+02:00", 0), Ok(now));
        assert_eq!(parse_time_ms("2025-01-31T12:00:00.5Z", 0), Ok(now + 500));
        assert_eq!(parse_time_ms("2025-01-31 12:00", 0), Ok(now));
        assert_eq!(parse_time_ms("2025-01-31", 0), Ok(now - 12 * 3_600_000));
        assert_eq!(parse_time_ms("1738324800000", 0), Ok(now));
        assert_eq!(parse_time_ms("2h", now), Ok(now - 7_200_000));
        assert!(parse_time_ms("2025-02-30", 0).is_err());
        assert!(parse_time_ms("2025-01-31T25:00:00Z", 0).is_err());
        assert!(parse_time_ms("yesterday", 0).is_err());
        for ms in [0, now, 951_782_400_000, 4_102_444_800_000] {
            assert_eq!(parse_time_ms(&format_utc(ms), 0), Ok(ms));
        }
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration_ms("90s"), Ok(90_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("7d"), Ok(7 * MS_PER_DAY));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert!(parse_duration_ms("10").is_err());
        assert!(parse_duration_ms("h").is_err());
        assert!(parse_duration_ms("5y").is_err());
        assert!(parse_duration_ms("").is_err());
    }
}
