//! Names that tie records, units and specs together.

use serde::{Deserialize, Serialize};

/// Short, sortable, unique: a lower-case ULID.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(pub String);

impl InstanceId {
    /// A new id whose time part is `at`, so ids sort like creation times.
    pub fn generate(at: super::Timestamp) -> Self {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at.0.max(0) as u64);
        InstanceId(
            ulid::Ulid::from_datetime(t)
                .to_string()
                .to_ascii_lowercase(),
        )
    }
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The first 16 hex digits of the SHA-256 of a server's canonical spec: what
/// an instance runs, in one comparable word.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SpecHash(pub String);

impl std::fmt::Display for SpecHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
