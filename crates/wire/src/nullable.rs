//! Serde helper for fields that can be absent, `null`, or a value.
//!
//! Use it as `#[serde(default, with = "uniproxy_wire::nullable", skip_serializing_if =
//! "Option::is_none")]` on an `Option<Option<T>>`: absent reads as `None`, `null` as
//! `Some(None)`, and each is written back the way it came.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Reads a present field: `null` becomes `Some(None)`.
///
/// # Errors
/// Whatever `T`'s deserializer reports for a value of the wrong type.
pub fn deserialize<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Writes `Some(None)` as `null` (absent fields are skipped by `skip_serializing_if`).
///
/// # Errors
/// Whatever the serializer reports.
pub fn serialize<T, S>(value: &Option<Option<T>>, serializer: S) -> Result<S::Ok, S::Error>
where
    T: Serialize,
    S: Serializer,
{
    match value {
        Some(inner) => inner.serialize(serializer),
        None => serializer.serialize_none(),
    }
}
