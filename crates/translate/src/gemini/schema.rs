//! JSON Schema reduced to the OpenAPI subset Gemini accepts (its `Schema` message).
//!
//! Gemini knows `type` (one, upper case), `format`, `title`, `description`, `nullable`,
//! `enum` (strings only), `items`, `minItems`, `maxItems`, `properties`, `required`,
//! `minProperties`, `maxProperties`, `minimum`, `maximum`, `minLength`, `maxLength`, `pattern`,
//! `example`, `anyOf`, `propertyOrdering` and `default`. The reduction keeps the schema's meaning
//! where it can:
//!
//! - `$ref` to `#/$defs/…` or `#/definitions/…` is inlined (siblings of the `$ref` win); a
//!   `$ref` that leads back into itself cannot be inlined (the schema then goes as JSON
//!   Schema, below), and any other `$ref` is refused;
//! - `type: ["string", "null"]` becomes `type: STRING, nullable: true`; several non-null types
//!   become an `anyOf`; `anyOf`/`oneOf` of `X` and `{"type":"null"}` becomes `X` + `nullable`,
//!   other `anyOf`/`oneOf` stay `anyOf`; `allOf` is merged into one schema;
//! - `const: "x"` becomes `enum: ["x"]`; a `null` beside other values of an `enum` becomes
//!   `nullable`; an `enum` or `const` with other non-string values, which Gemini cannot
//!   express, moves into the description ("Allowed values: 1, 2") so the model still sees it;
//! - an object's properties keep the client's order, and one with two or more gets a
//!   `propertyOrdering` that lists them so (its own first, where it has one): Gemini otherwise
//!   writes them in alphabetical order, and a model asked for `reasoning` before `answer` means
//!   that order. A `propertyOrdering` always names exactly the properties beside it;
//! - `format` is kept only where Gemini takes it (`enum`, `date-time`, `int32`, `int64`,
//!   `float`, `double`); any other moves into the description ("format: email");
//! - everything else (`$schema`, `$id`, `$defs`, `additionalProperties`, `examples`,
//!   `uniqueItems`, `exclusiveMinimum`, `not`, `if`, …) is dropped: these are annotations or
//!   validation rules Gemini cannot state, and dropping them widens what the model may send
//!   without changing what a property means.
//! - `true` is the empty schema; `false`, or a schema that is not an object, is refused.
//!
//! Inlining copies: a definition used twice is there twice, and one whose properties use the
//! next definition twice, and so on, doubles at each step (2 KB of `$defs` asked for gigabytes).
//! So a request's schemas may copy at most [`MAX_COPIED`] bytes of JSON text between them, for
//! `$ref`s, for the alternatives of a type list (each takes the schema's other keywords) and
//! for an `allOf`'s merge; the `$ref` (or `type`, or `allOf`) where they run over is refused.
//!
//! One thing the subset cannot say at all: an object whose keys are not listed (a map,
//! `additionalProperties`, or `{"type": "object"}` alone). Gemini refuses an `OBJECT` without
//! properties ("properties: should be non-empty for OBJECT type"). A schema with such an object
//! goes instead as JSON Schema (`parametersJsonSchema`, `responseJsonSchema`), which Gemini
//! takes with the keywords its API reference lists ([`for_json_schema`]); an `allOf`, which
//! that list lacks, is merged there as here. So does a recursive schema (a tree's node whose
//! children are nodes): Gemini follows `$ref`s there, unrolling a cycle "to a limited degree",
//! and refuses one through a required property itself. A `$ref` there stands alone (Gemini
//! takes only `$` keywords beside it): one with a description beside it goes into an `anyOf`,
//! as does an `allOf` member's `$ref` that leads back into itself (Pydantic 1's described field).

use std::collections::HashSet;

use serde_json::{Map, Value, json};

/// How deep schemas and `$ref` chains may nest before the reduction gives up.
const MAX_DEPTH: usize = 64;

/// How many bytes of JSON text the reduction of one request's schemas may copy (see the module
/// docs). Real tool schemas are a few thousand nodes, tens of kilobytes even with every `$ref`
/// inlined, so 4 MiB refuses none of them; and the largest body a 2 KB request can make is then
/// about 2 MB (2^15 copies), where it was gigabytes.
pub(crate) const MAX_COPIED: usize = 4 << 20;

/// What is left of [`MAX_COPIED`] for one request: shared by all its schemas, so that many
/// tools cannot each copy the whole of it.
#[derive(Debug)]
pub(crate) struct Budget {
    left: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { left: MAX_COPIED }
    }
}

/// Why a schema cannot be reduced: the JSON path (relative to the schema) of the culprit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaError {
    /// Where, relative to the schema root (`.properties.next.$ref`), empty for the root.
    pub(crate) path: String,
    /// Whether the schema could be reduced but its copies would overrun the [`Budget`]: the
    /// schema is too large once expanded, rather than something Gemini cannot express.
    pub(crate) over_budget: bool,
    /// Whether it is a `$ref` that leads back into itself, which the subset cannot say but
    /// JSON Schema can ([`for_json_schema`]): [`reduce`] answers `None` for it.
    recursive: bool,
}

impl SchemaError {
    /// A part at `path` that the subset cannot express.
    fn at(path: String) -> Self {
        SchemaError { path, over_budget: false, recursive: false }
    }
}

/// Reduces a JSON schema to what Gemini accepts; `None` for a recursive schema, which the
/// subset cannot say and JSON Schema can ([`for_json_schema`]).
///
/// # Errors
/// [`SchemaError`] naming the part that cannot be expressed: an external `$ref`, a `false`
/// schema, a value that is not a schema, nesting deeper than 64, or the `$ref`, type list or
/// `allOf` whose copy would overrun `budget`.
pub(crate) fn reduce(schema: &Value, budget: &mut Budget) -> Result<Option<Value>, SchemaError> {
    let mut r = Reducer { root: schema, refs: Vec::new(), budget };
    match r.reduce(schema, String::new(), 0) {
        Ok(reduced) => Ok(Some(reduced)),
        Err(e) if e.recursive => Ok(None),
        Err(e) => Err(e),
    }
}

struct Reducer<'a> {
    root: &'a Value,
    /// The `$ref`s being inlined, outermost first, with their paths: meeting one again means
    /// recursion.
    refs: Vec<(String, String)>,
    /// What copies may still cost, checked before each copy is made.
    budget: &'a mut Budget,
}

const KEPT: &[&str] = &[
    "title",
    "description",
    "nullable",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "default",
    "propertyOrdering",
];

const FORMATS: &[&str] = &["enum", "date-time", "int32", "int64", "float", "double"];

impl Reducer<'_> {
    /// Takes the size of a copy of `value` from the budget. When it runs out, the error names
    /// the outermost `$ref` being inlined, the one that asked for all the copies below it (a
    /// path down the doubling definitions says less, and is long), else `path`.
    fn spend(&mut self, value: &Value, path: &str) -> Result<(), SchemaError> {
        let cost = text_len(value);
        match self.budget.left.checked_sub(cost) {
            Some(left) => {
                self.budget.left = left;
                Ok(())
            }
            None => {
                let outermost = self.refs.first().map(|(_, at)| at.as_str());
                let path = outermost.unwrap_or(path).to_owned();
                Err(SchemaError { path, over_budget: true, recursive: false })
            }
        }
    }

    fn reduce(&mut self, schema: &Value, path: String, depth: usize) -> Result<Value, SchemaError> {
        if depth > MAX_DEPTH {
            return Err(SchemaError::at(path));
        }
        let obj = match schema {
            Value::Bool(true) => return Ok(json!({})),
            Value::Object(o) => o,
            _ => return Err(SchemaError::at(path)),
        };
        if let Some(reference) = obj.get("$ref") {
            return self.inline_ref(obj, reference, path, depth);
        }
        if let Some(Value::Array(all)) = obj.get("allOf") {
            // The merge copies the schema, and reduces again what its members reduced to.
            self.spend(schema, &format!("{path}.allOf"))?;
            let mut merged = obj.clone();
            merged.shift_remove("allOf");
            for (i, sub) in all.iter().enumerate() {
                let sub = self.reduce(sub, format!("{path}.allOf[{i}]"), depth + 1)?;
                merge_into(&mut merged, sub);
            }
            return self.reduce(&Value::Object(merged), path, depth + 1);
        }

        let mut out = Map::new();
        let mut nullable = obj.get("nullable").and_then(Value::as_bool).unwrap_or(false);
        let mut any_of: Option<Vec<Value>> = None;

        match obj.get("type") {
            Some(Value::String(t)) => set_type(&mut out, t),
            Some(Value::Array(types)) => {
                let names: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
                if names.len() != types.len() {
                    return Err(SchemaError::at(format!("{path}.type")));
                }
                let non_null: Vec<&str> = names.iter().copied().filter(|t| *t != "null").collect();
                nullable |= non_null.len() < names.len();
                match non_null.as_slice() {
                    [] if nullable => {
                        out.insert("type".into(), json!("NULL"));
                        nullable = false;
                    }
                    [] => {}
                    [one] => set_type(&mut out, one),
                    many => {
                        // Each alternative carries the keywords that apply to its type.
                        let mut alts = Vec::new();
                        for t in many {
                            self.spend(schema, &format!("{path}.type"))?;
                            let mut single = obj.clone();
                            single.insert("type".into(), json!(t));
                            single.shift_remove("nullable");
                            alts.push(self.reduce(
                                &Value::Object(single),
                                path.clone(),
                                depth + 1,
                            )?);
                        }
                        any_of = Some(alts);
                    }
                }
            }
            Some(_) => return Err(SchemaError::at(format!("{path}.type"))),
            None => {}
        }
        if let Some(alts) = any_of {
            let mut out = Map::new();
            copy_annotations(obj, &mut out);
            drop_stale_ordering(&mut out);
            out.insert("anyOf".into(), Value::Array(alts));
            if nullable {
                out.insert("nullable".into(), json!(true));
            }
            return Ok(Value::Object(out));
        }

        for key in ["anyOf", "oneOf"] {
            let Some(alts) = obj.get(key) else { continue };
            let Value::Array(alts) = alts else {
                return Err(SchemaError::at(format!("{path}.{key}")));
            };
            let mut reduced = Vec::new();
            for (i, alt) in alts.iter().enumerate() {
                if alt.get("type").and_then(Value::as_str) == Some("null") {
                    nullable = true;
                    continue;
                }
                reduced.push(self.reduce(alt, format!("{path}.{key}[{i}]"), depth + 1)?);
            }
            if reduced.len() == 1 && out.get("type").is_none() {
                // `X | null`: the alternative itself, made nullable; the outer keywords win.
                if let Some(Value::Object(only)) = reduced.pop() {
                    for (k, v) in only {
                        out.entry(k).or_insert(v);
                    }
                }
            } else if !reduced.is_empty() {
                out.insert("anyOf".into(), Value::Array(reduced));
            }
        }

        // Enumerations: strings only.
        let values: Option<Vec<Value>> = match (obj.get("enum"), obj.get("const")) {
            (Some(Value::Array(v)), _) => Some(v.clone()),
            (_, Some(c)) => Some(vec![c.clone()]),
            (Some(_), None) => return Err(SchemaError::at(format!("{path}.enum"))),
            (None, None) => None,
        };
        let mut description = obj.get("description").and_then(Value::as_str).map(str::to_owned);
        if let Some(mut values) = values {
            // A `null` among other values is JSON Schema's nullable enumeration (Pydantic's
            // `Literal["a", None]`, `type: ["string", "null"]` beside `enum: ["a", null]`):
            // Gemini says that with `nullable`, and keeps the enumeration of the others.
            if values.iter().any(Value::is_null) && values.iter().any(|v| !v.is_null()) {
                values.retain(|v| !v.is_null());
                nullable = true;
            }
            let strings: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
            if strings.len() == values.len() {
                out.insert("enum".into(), json!(strings));
                out.entry("type").or_insert_with(|| json!("STRING"));
            } else {
                let listed: Vec<String> = values.iter().map(Value::to_string).collect();
                let note = format!("Allowed values: {}", listed.join(", "));
                description = Some(match description {
                    Some(d) if !d.is_empty() => format!("{d} ({note})"),
                    _ => note,
                });
            }
        }

        if let Some(Value::Object(props)) = obj.get("properties") {
            let mut reduced = Map::new();
            for (name, prop) in props {
                let sub = self.reduce(prop, format!("{path}.properties.{name}"), depth + 1)?;
                reduced.insert(name.clone(), sub);
            }
            // Gemini writes the properties of its `Schema` in alphabetical order unless told
            // otherwise; the client's order is the one it meant (an explanation before the
            // answer it leads to), as in the `propertyOrdering` Google's SDKs add.
            // The client's own ordering comes first, but it must name exactly these
            // properties: an `allOf` merge adds to them, after the ones it lists.
            if reduced.len() > 1 && !lists_exactly(obj.get("propertyOrdering"), &reduced) {
                let given = obj.get("propertyOrdering").and_then(Value::as_array);
                let given = given.into_iter().flatten().filter_map(Value::as_str);
                let mut seen = HashSet::with_capacity(reduced.len());
                let order = given
                    .chain(reduced.keys().map(String::as_str))
                    .filter(|name| reduced.contains_key(*name) && seen.insert(*name))
                    .map(|name| Value::String(name.to_owned()))
                    .collect();
                out.insert("propertyOrdering".into(), Value::Array(order));
            }
            out.insert("properties".into(), Value::Object(reduced));
            out.entry("type").or_insert_with(|| json!("OBJECT"));
        }
        if let Some(Value::Array(required)) = obj.get("required") {
            let names: Vec<&Value> = required.iter().filter(|v| v.is_string()).collect();
            if !names.is_empty() {
                out.insert("required".into(), json!(names));
            }
        }
        match obj.get("items") {
            Some(items @ (Value::Object(_) | Value::Bool(true))) => {
                let sub = self.reduce(items, format!("{path}.items"), depth + 1)?;
                out.insert("items".into(), sub);
                out.entry("type").or_insert_with(|| json!("ARRAY"));
            }
            Some(_) => return Err(SchemaError::at(format!("{path}.items"))),
            None => {}
        }
        if let Some(Value::String(f)) = obj.get("format") {
            if FORMATS.contains(&f.as_str()) {
                out.insert("format".into(), json!(f));
            } else {
                // The model should still know the string is an email, a URI, a date…
                let note = format!("format: {f}");
                description = Some(match description {
                    Some(d) if !d.is_empty() => format!("{d} ({note})"),
                    _ => note,
                });
            }
        }

        copy_annotations(obj, &mut out);
        drop_stale_ordering(&mut out);
        match description {
            Some(d) => out.insert("description".into(), json!(d)),
            None => out.shift_remove("description"),
        };
        if nullable {
            out.insert("nullable".into(), json!(true));
        } else {
            out.shift_remove("nullable");
        }
        Ok(Value::Object(out))
    }

    fn inline_ref(
        &mut self,
        obj: &Map<String, Value>,
        reference: &Value,
        path: String,
        depth: usize,
    ) -> Result<Value, SchemaError> {
        let here = format!("{path}.$ref");
        let Some(reference) = reference.as_str() else { return Err(SchemaError::at(here)) };
        let Some(target) = ref_target(self.root, reference) else {
            return Err(SchemaError::at(here));
        };
        if self.refs.iter().any(|(r, _)| r == reference) {
            return Err(SchemaError { recursive: true, ..SchemaError::at(here) });
        }
        let mut merged = match target {
            Value::Object(t) => {
                self.spend(target, &here)?;
                t.clone()
            }
            other => {
                self.refs.push((reference.to_owned(), here.clone()));
                let reduced = self.reduce(other, here, depth + 1);
                self.refs.pop();
                return reduced;
            }
        };
        self.refs.push((reference.to_owned(), here));
        // Keywords next to the `$ref` (a description, `nullable`) override the target's.
        for (k, v) in obj {
            if k != "$ref" {
                merged.insert(k.clone(), v.clone());
            }
        }
        let reduced = self.reduce(&Value::Object(merged), path, depth + 1);
        self.refs.pop();
        reduced
    }
}

/// Whether a reduced schema is an object without properties (see the module docs).
pub(crate) fn is_open_object(reduced: &Value) -> bool {
    reduced.get("type").and_then(Value::as_str) == Some("OBJECT")
        && reduced.get("properties").and_then(Value::as_object).is_none_or(Map::is_empty)
}

/// Whether a reduced schema has an object without properties below its root.
pub(crate) fn has_open_object(reduced: &Value) -> bool {
    let Some(node) = reduced.as_object() else { return false };
    let properties = node.get("properties").and_then(Value::as_object).into_iter().flatten();
    let any_of = node.get("anyOf").and_then(Value::as_array).into_iter().flatten();
    properties
        .map(|(_, v)| v)
        .chain(node.get("items"))
        .chain(any_of)
        .any(|child| is_open_object(child) || has_open_object(child))
}

/// Whether a JSON schema's root takes keys it does not list: `additionalProperties` that is
/// `true` or a schema.
pub(crate) fn takes_any_keys(schema: &Value) -> bool {
    schema.get("additionalProperties").is_some_and(|a| a.is_object() || *a == Value::Bool(true))
}

/// The JSON Schema keywords Gemini's `parametersJsonSchema` and `responseJsonSchema` take.
const JSON_SCHEMA_KEPT: &[&str] = &[
    "$id",
    "$defs",
    "definitions",
    "$ref",
    "$anchor",
    "type",
    "format",
    "title",
    "description",
    "enum",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "anyOf",
    "oneOf",
    "properties",
    "additionalProperties",
    "required",
    "propertyOrdering",
];

/// A JSON schema with only the keywords Gemini takes as JSON Schema ([`JSON_SCHEMA_KEPT`]; a
/// `const` becomes a one-value `enum`; the root's `definitions`, which Gemini's list does not
/// name, go as `$defs`, the `$ref`s into them with them); the rest
/// (`$schema`, `default`, `examples`, `pattern`, …) is left out, as [`reduce`] leaves it out.
/// An `allOf`, which Gemini does not take, is merged into its schema as [`reduce`] merges it,
/// its members' `$ref`s inlined: left out, it would leave the schema saying nothing of what its
/// members say (Pydantic's `{"allOf": [{"$ref": …}], "description": …}` would take any value).
///
/// # Errors
/// [`SchemaError`] at an `allOf` member's `$ref` that cannot be inlined (not into the schema's
/// `$defs` or `definitions`; a recursive one stays a `$ref`), a nesting deeper than 64, or a
/// merge whose copies would overrun `budget`.
pub(crate) fn for_json_schema(schema: &Value, budget: &mut Budget) -> Result<Value, SchemaError> {
    let defs_renamed = schema.get("definitions").is_some() && schema.get("$defs").is_none();
    let mut c = JsonSchemaCopier { root: schema, refs: Vec::new(), budget, defs_renamed };
    c.copy(schema, String::new(), 0)
}

/// What [`for_json_schema`] keeps track of: the `$ref`s of `allOf` members being inlined (to
/// find recursion) and what copies may still cost.
struct JsonSchemaCopier<'a> {
    root: &'a Value,
    refs: Vec<String>,
    budget: &'a mut Budget,
    /// Whether the root's `definitions` go as `$defs`, the keyword Gemini's list names, and
    /// the `$ref`s into them with it (the root has `definitions` and no `$defs`: Pydantic 1's
    /// and zod-to-json-schema's schemas).
    defs_renamed: bool,
}

impl JsonSchemaCopier<'_> {
    fn copy(&mut self, schema: &Value, path: String, depth: usize) -> Result<Value, SchemaError> {
        if depth > MAX_DEPTH {
            return Err(SchemaError::at(path));
        }
        let Value::Object(node) = schema else { return Ok(schema.clone()) };
        let mut out = Map::new();
        for (key, value) in node {
            let at = format!("{path}.{key}");
            let kept = match key.as_str() {
                "properties" | "$defs" | "definitions" => match value {
                    Value::Object(m) => {
                        let mut copied = Map::new();
                        for (k, v) in m {
                            copied.insert(k.clone(), self.copy(v, format!("{at}.{k}"), depth + 1)?);
                        }
                        Value::Object(copied)
                    }
                    other => other.clone(),
                },
                "items" | "additionalProperties" => self.copy(value, at, depth + 1)?,
                "prefixItems" | "anyOf" | "oneOf" => match value {
                    Value::Array(all) => {
                        let mut copied = Vec::with_capacity(all.len());
                        for (i, v) in all.iter().enumerate() {
                            copied.push(self.copy(v, format!("{at}[{i}]"), depth + 1)?);
                        }
                        Value::Array(copied)
                    }
                    other => other.clone(),
                },
                "const" => {
                    out.entry("enum").or_insert_with(|| json!([value]));
                    continue;
                }
                "$ref" if self.defs_renamed => match value.as_str() {
                    Some(r) => match r.strip_prefix("#/definitions/") {
                        Some(name) => json!(format!("#/$defs/{name}")),
                        None => value.clone(),
                    },
                    None => value.clone(),
                },
                k if JSON_SCHEMA_KEPT.contains(&k) => value.clone(),
                _ => continue,
            };
            let key = if self.defs_renamed && depth == 0 && key == "definitions" {
                "$defs".to_owned()
            } else {
                key.clone()
            };
            out.insert(key, kept);
        }
        if let Some(Value::Array(all)) = node.get("allOf") {
            for (i, member) in all.iter().enumerate() {
                let member = self.all_of_member(member, format!("{path}.allOf[{i}]"), depth)?;
                merge_into(&mut out, member);
            }
            drop_stale_ordering(&mut out);
        }
        // Gemini takes only `$` keywords beside a `$ref` ("If `$ref` is set on a sub-schema, no
        // other properties, except for those starting as a `$`, may be set"), and Pydantic
        // writes a field's description there: the `$ref` goes alone into an `anyOf` of one,
        // which says the same.
        if !out.contains_key("anyOf")
            && out.keys().any(|k| !k.starts_with('$'))
            && let Some(reference) = out.shift_remove("$ref")
        {
            out.insert("anyOf".to_owned(), json!([{ "$ref": reference }]));
        }
        Ok(Value::Object(out))
    }

    /// An `allOf` member as it merges: copied, and a `$ref` to the schema's `$defs` or
    /// `definitions` inlined (keywords beside it win), since two members may each be one; a
    /// `$ref` that leads back into itself stays one.
    fn all_of_member(
        &mut self,
        member: &Value,
        path: String,
        depth: usize,
    ) -> Result<Value, SchemaError> {
        let Some(reference) = member.get("$ref") else {
            return self.copy(member, path, depth + 1);
        };
        let here = format!("{path}.$ref");
        let Some(reference) = reference.as_str() else { return Err(SchemaError::at(here)) };
        let Some(whole @ Value::Object(target)) = ref_target(self.root, reference) else {
            return Err(SchemaError::at(here));
        };
        if self.refs.iter().any(|r| r == reference) {
            // It leads back into itself (Pydantic 1 writes a described field's `$ref` as an
            // `allOf` of one): it stays a `$ref`, which Gemini follows, where inlined it
            // would never end.
            return self.copy(member, path, depth + 1);
        }
        match self.budget.left.checked_sub(text_len(whole)) {
            Some(left) => self.budget.left = left,
            None => return Err(SchemaError { path: here, over_budget: true, recursive: false }),
        }
        let mut merged = target.clone();
        if let Value::Object(siblings) = member {
            for (k, v) in siblings.iter().filter(|(k, _)| *k != "$ref") {
                merged.insert(k.clone(), v.clone());
            }
        }
        self.refs.push(reference.to_owned());
        let copied = self.copy(&Value::Object(merged), path, depth + 1);
        self.refs.pop();
        copied
    }
}

/// About the length of `value` as compact JSON text (a number counts 8, escapes are not
/// counted): what copying it costs, near enough, found without writing it.
/// The definition a `$ref` to `#/$defs/NAME` or `#/definitions/NAME` names in `root`.
fn ref_target<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    ["#/$defs/", "#/definitions/"].iter().find_map(|prefix| {
        let name = reference.strip_prefix(prefix)?;
        root.get(&prefix[2..prefix.len() - 1])?.get(name)
    })
}

fn text_len(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => items.iter().map(|v| text_len(v) + 1).sum::<usize>() + 1,
        Value::Object(members) => {
            members.iter().map(|(k, v)| k.len() + 4 + text_len(v)).sum::<usize>() + 1
        }
    }
}

fn set_type(out: &mut Map<String, Value>, t: &str) {
    out.insert("type".into(), json!(t.to_ascii_uppercase()));
}

fn copy_annotations(from: &Map<String, Value>, to: &mut Map<String, Value>) {
    for key in KEPT {
        if let Some(v) = from.get(*key) {
            to.entry(*key).or_insert_with(|| v.clone());
        }
    }
}

/// Whether `ordering` (a `propertyOrdering`) names each of `properties` once, and nothing else.
fn lists_exactly(ordering: Option<&Value>, properties: &Map<String, Value>) -> bool {
    let Some(Value::Array(names)) = ordering else { return false };
    let mut seen = HashSet::with_capacity(names.len());
    names.len() == properties.len()
        && names.iter().all(|name| {
            name.as_str().is_some_and(|name| properties.contains_key(name) && seen.insert(name))
        })
}

/// Leaves out a `propertyOrdering` that does not list exactly the schema's properties: one
/// that came with the alternative an `X | null` `anyOf` collapsed to, whose properties the
/// outer schema's replaced, or the client's beside properties an `allOf` added to, or on a
/// schema with none. Gemini takes it as the order to write the properties in, and it must
/// name those properties.
fn drop_stale_ordering(out: &mut Map<String, Value>) {
    let stale = match (out.get("propertyOrdering"), out.get("properties")) {
        (None, _) => false,
        (ordering, Some(Value::Object(properties))) => !lists_exactly(ordering, properties),
        (Some(_), _) => true,
    };
    if stale {
        out.shift_remove("propertyOrdering");
    }
}

/// Merges an `allOf` member into the schema: properties and `required` are unions, other
/// keywords keep the first value seen.
fn merge_into(into: &mut Map<String, Value>, sub: Value) {
    let Value::Object(sub) = sub else { return };
    for (k, v) in sub {
        match (k.as_str(), into.get_mut(&k), v) {
            ("properties", Some(Value::Object(have)), Value::Object(add)) => {
                for (name, prop) in add {
                    have.entry(name).or_insert(prop);
                }
            }
            ("required", Some(Value::Array(have)), Value::Array(add)) => {
                for name in add {
                    if !have.contains(&name) {
                        have.push(name);
                    }
                }
            }
            // The merged properties' order is worked out again from the merge.
            ("propertyOrdering", ..) => {}
            // Reduced members already have upper-case types; the second reduction of the
            // merged schema upper-cases again, which is harmless.
            (_, None, v) => {
                into.insert(k, v);
            }
            _ => {}
        }
    }
}
