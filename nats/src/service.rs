//! Service names appear inside subjects, so they are validated once, here.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A logical service (`immune.service` label), safe to use as a subject token:
/// ASCII letters, digits, `-` and `_`, 1 to 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceName(String);

/// A name that cannot be used as a subject token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {name:?}: use 1 to 64 of [A-Za-z0-9_-]")]
pub struct InvalidName {
    pub name: String,
}

impl ServiceName {
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidName> {
        let name = name.into();
        if is_token(&name) {
            Ok(Self(name))
        } else {
            Err(InvalidName { name })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `s` can stand as one subject token.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl TryFrom<String> for ServiceName {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<ServiceName> for String {
    fn from(s: ServiceName) -> Self {
        s.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_subject_wildcards_and_separators() {
        for bad in ["", "a.b", "a*", ">", "with space", &"x".repeat(65)] {
            assert!(ServiceName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            ServiceName::new("orders-v2_1").expect("valid").as_str(),
            "orders-v2_1"
        );
    }
}
