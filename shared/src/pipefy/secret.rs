//! A string that must never be printed: API tokens, client secrets, webhook URLs.

use std::fmt;

/// A secret value. `Debug` and `Display` print `***`; the value is only reachable through
/// [`Secret::expose`], which callers use at the one place the value is needed (an HTTP header).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value. Only for the place where it is sent (e.g. the Authorization header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Replaces every occurrence of this secret in `text` by `***`, for messages built from
    /// data we do not control (response bodies) that could echo it back.
    pub fn redact_in(&self, text: &str) -> String {
        // Very short values would redact unrelated text and are not real secrets anyway.
        if self.0.len() < 4 {
            return text.to_string();
        }
        text.replace(self.0.as_str(), "***")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_string())
    }
}

// Reading a secret from configuration is fine; there is deliberately no `Serialize`, so a
// secret cannot end up in a report or a state file by accident.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("tok-123456");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(***)");
        assert_eq!(s.expose(), "tok-123456");
    }

    #[test]
    fn redact_in_replaces_occurrences() {
        let s = Secret::new("tok-123456");
        assert_eq!(
            s.redact_in("bad token tok-123456 here"),
            "bad token *** here"
        );
        assert_eq!(Secret::new("ab").redact_in("abc"), "abc");
    }

    #[test]
    fn deserializes_from_a_string() {
        let s: Secret = serde_json::from_str("\"x-secret\"").unwrap();
        assert_eq!(s.expose(), "x-secret");
    }
}
