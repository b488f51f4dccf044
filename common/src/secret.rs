//! The redacting newtype for every secret postern handles: passwords, client
//! secrets, access, refresh and ID tokens, device codes, authorization codes,
//! PKCE verifiers and signed assertions.

use std::fmt;
use std::sync::Arc;

/// A secret string. `Debug` and `Display` print `[redacted]`; the value is
/// reached only through [`Secret::expose`], so it cannot end up in a log line
/// or an error message by accident. Cloning is cheap (shared, immutable), so a
/// cached access token is handed to every sender without a copy.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret value.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Arc::from(value.into()))
    }

    /// The value, for the one place that must put it on the wire or in a file.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `true` when the value is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Its length in bytes (safe to show).
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(Arc::from(value))
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(Arc::from(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(s.len(), 7);
    }
}
