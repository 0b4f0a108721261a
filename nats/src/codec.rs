//! MessagePack with named fields. The only way a message is put on or read off the wire.

use std::ops::RangeInclusive;

use serde::Deserialize;

use crate::envelope::Envelope;

/// Larger messages are refused on both sides (the NATS server's default max_payload too).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Schema versions this build can read.
pub const SUPPORTED_VERSIONS: RangeInclusive<u16> = 1..=1;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("schema version {found} is not supported (this build reads {min}..={max})")]
    UnsupportedVersion { found: u16, min: u16, max: u16 },
    #[error("not a valid immune envelope: {0}")]
    Malformed(String),
    #[error("cannot encode event: {0}")]
    Encode(String),
}

impl CodecError {
    /// A stable name for metric labels and dead letters.
    pub fn kind(&self) -> &'static str {
        match self {
            CodecError::TooLarge { .. } => "too_large",
            CodecError::UnsupportedVersion { .. } => "unsupported_version",
            CodecError::Malformed(_) => "malformed",
            CodecError::Encode(_) => "encode",
        }
    }
}

pub fn encode(envelope: &Envelope) -> Result<Vec<u8>, CodecError> {
    let bytes = rmp_serde::to_vec_named(envelope).map_err(|e| CodecError::Encode(e.to_string()))?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    Ok(bytes)
}

/// Only the version, read first so that a message of a future schema is refused with that
/// reason rather than with whatever field it happens to trip over.
#[derive(Deserialize)]
struct VersionProbe {
    schema_version: u16,
}

pub fn decode(bytes: &[u8]) -> Result<Envelope, CodecError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    let probe: VersionProbe =
        rmp_serde::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !SUPPORTED_VERSIONS.contains(&probe.schema_version) {
        return Err(CodecError::UnsupportedVersion {
            found: probe.schema_version,
            min: *SUPPORTED_VERSIONS.start(),
            max: *SUPPORTED_VERSIONS.end(),
        });
    }
    rmp_serde::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))
}
