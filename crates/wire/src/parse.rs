use serde::de::DeserializeOwned;

/// A body that is not valid JSON or has a value of the wrong type, with the JSON path of the
/// offending value (`messages[2].content`).
#[derive(Debug)]
pub struct WireError {
    path: String,
    source: serde_json::Error,
}

impl WireError {
    /// The JSON path of the value that failed (`messages[2].content`); empty for the root.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether the body was not JSON at all (as opposed to JSON of the wrong shape).
    pub fn is_syntax(&self) -> bool {
        matches!(
            self.source.classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        )
    }

    /// The message of the underlying error, without the position.
    pub fn message(&self) -> String {
        let full = self.source.to_string();
        // serde_json appends " at line L column C"; the path says more to a client.
        match full.rfind(" at line ") {
            Some(i) if !self.is_syntax() => full[..i].to_owned(),
            _ => full,
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_syntax() {
            write!(f, "invalid JSON body: {}", self.source)
        } else if self.path.is_empty() {
            write!(f, "invalid request body: {}", self.message())
        } else {
            write!(f, "invalid value at `{}`: {}", self.path, self.message())
        }
    }
}

impl std::error::Error for WireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Parses a JSON body, naming the path of the first bad value on failure.
///
/// # Errors
/// [`WireError`] when the bytes are not JSON or do not fit `T`.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        WireError { path: if path == "." { String::new() } else { path }, source: e.into_inner() }
    })?;
    de.end().map_err(|source| WireError { path: String::new(), source })?;
    Ok(value)
}
