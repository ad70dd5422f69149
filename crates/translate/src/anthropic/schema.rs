//! JSON Schema as Claude's constrained decoding takes it: structured outputs
//! (`output_config.format`) and strict tools.
//!
//! Anthropic answers 400 to a schema with a validation keyword its grammar cannot enforce
//! ("For 'integer' type, properties maximum, minimum are not supported"), where OpenAI takes
//! the same schema. Clients send them without being asked: Zod 4 writes every `.int()` as
//! `minimum: -9007199254740991, maximum: 9007199254740991`, so the Vercel AI SDK's
//! `generateObject` and LangChain's `withStructuredOutput` fail on any schema with a whole
//! number. As Anthropic's own SDKs do (`transformJSONSchema`), such keywords move into the
//! node's `description`, `{minimum: 1, maximum: 5}` after any description it has, so the model
//! still reads them; the client validates the answer as before. They are:
//!
//! - `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `multipleOf`;
//! - `minLength`, `maxLength`, and a `format` other than those Claude knows (`date-time`,
//!   `time`, `date`, `duration`, `email`, `hostname`, `uri`, `ipv4`, `ipv6`, `uuid`);
//! - `maxItems`, `uniqueItems`, and a `minItems` other than 0 or 1;
//! - `minProperties`, `maxProperties`, `patternProperties`, `propertyNames`.
//!
//! An object with `properties` and no `additionalProperties` gets `additionalProperties:
//! false`, which Anthropic requires said ("For 'object' type, 'additionalProperties' must be
//! explicitly set to false") and OpenAI's strict mode means. One that allows other keys
//! (`additionalProperties` `true` or a schema, or no `properties`) is left as it is, as is
//! everything else: narrowing it would change what the answer may hold, so Anthropic's
//! refusal says what to change.

use serde_json::{Map, Value};

/// How deep the walk goes; below that a schema goes as it is (Anthropic judges it).
const MAX_DEPTH: usize = 64;

/// The string formats Claude's structured outputs know.
const FORMATS: &[&str] =
    &["date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"];

/// Keywords Anthropic refuses wherever they are.
const MOVED: &[&str] = &[
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "patternProperties",
    "propertyNames",
];

/// `schema` with what Anthropic refuses moved into descriptions (see the module docs).
pub(crate) fn strict(schema: Value) -> Value {
    walk(schema, 0)
}

fn walk(schema: Value, depth: usize) -> Value {
    match schema {
        Value::Object(node) if depth < MAX_DEPTH => Value::Object(node_of(node, depth + 1)),
        other => other,
    }
}

/// Each value of a map of schemas (`properties`, `$defs`).
fn walk_map(schemas: Value, depth: usize) -> Value {
    match schemas {
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, walk(v, depth))).collect())
        }
        other => other,
    }
}

/// A schema, or each of a list of them (`anyOf`, and `items` as a tuple's list).
fn walk_list(schemas: Value, depth: usize) -> Value {
    match schemas {
        Value::Array(list) => Value::Array(list.into_iter().map(|v| walk(v, depth)).collect()),
        other => walk(other, depth),
    }
}

fn node_of(node: Map<String, Value>, depth: usize) -> Map<String, Value> {
    let mut out = Map::with_capacity(node.len() + 1);
    let mut moved: Vec<(String, Value)> = Vec::new();
    for (key, value) in node {
        let value = match key.as_str() {
            "properties" | "$defs" | "definitions" => walk_map(value, depth),
            "items" | "anyOf" | "oneOf" | "allOf" | "prefixItems" => walk_list(value, depth),
            "not" | "if" | "then" | "else" | "contains" => walk(value, depth),
            "additionalProperties" if value.is_object() => walk(value, depth),
            k if MOVED.contains(&k) => {
                moved.push((key, value));
                continue;
            }
            "format" if !value.as_str().is_some_and(|f| FORMATS.contains(&f)) => {
                moved.push((key, value));
                continue;
            }
            "minItems" if !matches!(value.as_u64(), Some(0 | 1)) => {
                moved.push((key, value));
                continue;
            }
            _ => value,
        };
        out.insert(key, value);
    }
    if out.get("properties").is_some_and(Value::is_object)
        && !out.contains_key("additionalProperties")
    {
        out.insert("additionalProperties".to_owned(), Value::Bool(false));
    }
    if !moved.is_empty() {
        let said = moved.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ");
        let description = match out.get("description").and_then(Value::as_str) {
            Some(d) if !d.is_empty() => format!("{d}\n\n{{{said}}}"),
            _ => format!("{{{said}}}"),
        };
        out.insert("description".to_owned(), Value::String(description));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::strict;

    #[test]
    fn a_zod_int_keeps_its_bounds_in_the_description() {
        let schema = json!({
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": -9007199254740991i64, "maximum": 9007199254740991i64},
                "s": {"type": "string", "description": "A name.", "minLength": 1, "format": "email"},
                "a": {"type": "array", "items": {"type": "number", "multipleOf": 0.5}, "minItems": 2}
            },
            "required": ["n", "s", "a"]
        });
        assert_eq!(
            strict(schema),
            json!({
                "type": "object",
                "properties": {
                    "n": {"type": "integer", "description": "{minimum: -9007199254740991, maximum: 9007199254740991}"},
                    "s": {"type": "string", "description": "A name.\n\n{minLength: 1}", "format": "email"},
                    "a": {"type": "array", "items": {"type": "number", "description": "{multipleOf: 0.5}"}, "description": "{minItems: 2}"}
                },
                "required": ["n", "s", "a"],
                "additionalProperties": false
            })
        );
    }

    #[test]
    fn open_objects_and_what_claude_takes_stay() {
        let schema = json!({
            "type": "object",
            "properties": {"m": {"type": "object", "additionalProperties": {"type": "string"}}},
            "additionalProperties": true,
            "$defs": {"d": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "date"}}}
        });
        assert_eq!(strict(schema.clone()), schema);
    }

    #[test]
    fn a_property_named_like_a_keyword_is_a_property() {
        let schema = json!({
            "type": "object",
            "properties": {"minimum": {"type": "number"}, "format": {"type": "string"}},
            "additionalProperties": false
        });
        assert_eq!(strict(schema.clone()), schema);
    }
}
