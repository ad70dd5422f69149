//! An upstream request kept as runs of the client's request and the bytes between them.
//!
//! An OpenAI-compatible upstream gets the client's request with the model (and a few members
//! like it) rewritten: all the rest is the client's bytes. Stored whole, a 20 KB chat history
//! is written twice over, in the WAL and again at every checkpoint; kept as the runs it
//! copied, the second copy is a few dozen bytes.

use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;
use serde::{Deserialize, Serialize};

/// A run of an entry's upstream request that is bytes of its client request:
/// `upstream_request[at..at + len] == client_request[from..from + len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CopiedSpan {
    /// Where the run starts in the upstream request.
    pub at: usize,
    /// Where it starts in the client request.
    pub from: usize,
    /// Its length in bytes.
    pub len: usize,
}

/// What the store keeps of `upstream`: the bytes outside `spans`, if the spans are in order,
/// apart, on character boundaries and the client's bytes where they say; `None` if any is not
/// (the request is then kept whole).
pub(crate) fn strip(client: &str, upstream: &str, spans: &[CopiedSpan]) -> Option<String> {
    let copied: usize = spans.iter().map(|s| s.len).sum();
    let mut kept = String::with_capacity(upstream.len().checked_sub(copied)?);
    let mut end = 0;
    for span in spans {
        let run_end = span.at.checked_add(span.len)?;
        let run = upstream.get(span.at..run_end)?;
        if client.get(span.from..span.from.checked_add(span.len)?)? != run {
            return None;
        }
        kept.push_str(upstream.get(end..span.at)?);
        end = run_end;
    }
    kept.push_str(upstream.get(end..)?);
    Some(kept)
}

/// The upstream request from what [`strip`] kept, or `None` if the spans do not fit (a damaged
/// or hand-edited row).
pub(crate) fn rebuild(client: &str, kept: &str, spans: &[CopiedSpan]) -> Option<String> {
    let copied: usize = spans.iter().map(|s| s.len).sum();
    let mut upstream = String::with_capacity(kept.len().checked_add(copied)?);
    let mut taken = 0usize;
    for span in spans {
        let gap = span.at.checked_sub(upstream.len())?;
        let between = kept.get(taken..taken.checked_add(gap)?)?;
        upstream.push_str(between);
        taken += gap;
        upstream.push_str(client.get(span.from..span.from.checked_add(span.len)?)?);
    }
    upstream.push_str(kept.get(taken..)?);
    Some(upstream)
}

/// Adds the SQL function that gives a stored upstream request whole, for searches:
/// `uniproxy_upstream_request(upstream_request, upstream_copies, client_request)`. A row whose
/// runs do not fit gives what it kept.
pub(crate) fn register_sql_function(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("uniproxy_upstream_request", 3, flags, |ctx| {
        let kept = ctx.get_raw(0).as_str_or_null()?;
        let spans = ctx.get_raw(1).as_str_or_null()?;
        let client = ctx.get_raw(2).as_str_or_null()?.unwrap_or_default();
        let Some(kept) = kept else { return Ok(None) };
        let whole = spans
            .and_then(|spans| decode(spans).ok())
            .and_then(|spans| rebuild(client, kept, &spans));
        Ok(Some(whole.unwrap_or_else(|| kept.to_owned())))
    })
}

/// The stored form of `spans`: `[[at,from,len],…]`.
pub(crate) fn encode(spans: &[CopiedSpan]) -> String {
    let triples: Vec<[usize; 3]> = spans.iter().map(|s| [s.at, s.from, s.len]).collect();
    serde_json::to_string(&triples).unwrap_or_default()
}

/// Spans from their stored form.
pub(crate) fn decode(text: &str) -> Result<Vec<CopiedSpan>, serde_json::Error> {
    let triples: Vec<[usize; 3]> = serde_json::from_str(text)?;
    Ok(triples.into_iter().map(|[at, from, len]| CopiedSpan { at, from, len }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CLIENT: &str =
        r#"{"model":"alias","messages":[{"role":"user","content":"héllo"}],"stream":true}"#;

    fn span(at: usize, from: usize, len: usize) -> CopiedSpan {
        CopiedSpan { at, from, len }
    }

    #[test]
    fn the_runs_are_kept_out_and_put_back() {
        let upstream =
            r#"{"messages":[{"role":"user","content":"héllo"}],"model":"m","stream":true}"#;
        let messages = r#""messages":[{"role":"user","content":"héllo"}]"#;
        let spans = [span(1, 17, messages.len()), span(upstream.len() - 14, CLIENT.len() - 14, 13)];
        let kept = strip(CLIENT, upstream, &spans).unwrap();
        assert_eq!(kept, r#"{,"model":"m",}"#);
        assert_eq!(rebuild(CLIENT, &kept, &spans).as_deref(), Some(upstream));
        assert_eq!(decode(&encode(&spans)).unwrap(), spans);
        assert_eq!(
            encode(&spans),
            format!(
                "[[1,17,{}],[{},{},13]]",
                messages.len(),
                upstream.len() - 14,
                CLIENT.len() - 14
            )
        );
        assert_eq!(strip(CLIENT, upstream, &[]).as_deref(), Some(upstream));
    }

    #[test]
    fn spans_that_do_not_hold_keep_the_request_whole() {
        let upstream = r#"{"messages":[{"role":"user","content":"héllo"}],"model":"m"}"#;
        let ok = span(1, 17, 10);
        for bad in [
            [ok, span(2, 18, 3)],                 // overlapping
            [span(11, 27, 3), ok],                // out of order
            [ok, span(40, 56, 1)],                // inside "é" on both sides
            [ok, span(50, 17, 10)],               // not the client's bytes there
            [ok, span(upstream.len() - 2, 0, 5)], // past the end
            [ok, span(usize::MAX, 0, 2)],         // overflowing
        ] {
            assert_eq!(strip(CLIENT, upstream, &bad), None, "{bad:?}");
        }
        // A damaged row does not rebuild (and does not panic).
        assert_eq!(rebuild(CLIENT, "{}", &[span(5, 0, 3)]), None);
        assert_eq!(rebuild(CLIENT, "{}", &[span(0, 70, 30)]), None);
        let kept = r#"{,"model":"m",}"#;
        assert_eq!(rebuild(CLIENT, kept, &[span(1, 17, 10), span(3, 17, 2)]), None, "out of order");
        assert!(decode("[[1,2]]").is_err());
    }

    proptest! {
        #[test]
        fn what_is_stripped_rebuilds(
            client in "[a-zé😀\"{}]{0,40}",
            cuts in proptest::collection::vec((0usize..60, 0usize..60, 0usize..20), 0..4),
            extra in proptest::collection::vec("[A-Z,é]{0,5}", 5),
        ) {
            // An upstream of the client's runs (wherever they are on boundaries) and other text.
            let mut upstream = String::new();
            let mut spans = Vec::new();
            for (i, &(from, _, len)) in cuts.iter().enumerate() {
                upstream.push_str(&extra[i]);
                if let Some(run) = client.get(from..from + len) {
                    spans.push(span(upstream.len(), from, len));
                    upstream.push_str(run);
                }
            }
            upstream.push_str(&extra[4]);
            let kept = strip(&client, &upstream, &spans);
            prop_assert!(kept.is_some());
            let kept = kept.unwrap_or_default();
            prop_assert_eq!(kept.len() + spans.iter().map(|s| s.len).sum::<usize>(), upstream.len());
            prop_assert_eq!(rebuild(&client, &kept, &spans), Some(upstream.clone()));
            // Any span moved by its second number either still holds or is refused.
            for (i, &(_, shift, _)) in cuts.iter().enumerate().take(spans.len()) {
                let mut moved = spans.clone();
                moved[i].from = shift;
                if let Some(kept) = strip(&client, &upstream, &moved) {
                    prop_assert_eq!(rebuild(&client, &kept, &moved), Some(upstream.clone()));
                }
            }
        }
    }
}
