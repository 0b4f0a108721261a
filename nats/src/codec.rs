//! MessagePack with named fields. The only way a message is put on or read off the wire.

use std::ops::RangeInclusive;

use serde::Deserialize;

use crate::envelope::Envelope;

/// Larger messages are refused on both sides (the NATS server's default max_payload too).
/// Only an incident or an escalation, whose story grows with the incident, may be this large;
/// every other kind has a smaller limit, see [`max_bytes`].
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// The limit of every kind without one of its own: a hundred times any such event seen.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// The limit of a metric snapshot: a real one is about 1 KiB (a dozen features); one of
/// 64 KiB already carries thousands of features, which no collector writes.
pub const MAX_SNAPSHOT_BYTES: usize = 64 * 1024;

/// The largest encoded size a message of `kind` may have, on the way out and on the way in.
/// A stage refuses a larger one (`too_large`, dead-lettered with the reason) before it
/// decodes the body, so a 900 KiB snapshot that the server's `max_payload` lets through
/// costs no more than a look at its kind.
pub fn max_bytes(kind: &str) -> usize {
    match kind {
        "incident" | "escalation" => MAX_MESSAGE_BYTES,
        "metric_snapshot" => MAX_SNAPSHOT_BYTES,
        _ => MAX_EVENT_BYTES,
    }
}

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
    let max = max_bytes(envelope.body.kind());
    if bytes.len() > max {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max,
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
    check(bytes)?;
    rmp_serde::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))
}

/// What every decoder checks before it reads the body: the size against the limit of the
/// message's kind, and the schema version.
pub(crate) fn check(bytes: &[u8]) -> Result<(), CodecError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    let version = match peek_version(bytes) {
        Some(v) => v,
        None => {
            let probe: VersionProbe =
                rmp_serde::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
            probe.schema_version
        }
    };
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(CodecError::UnsupportedVersion {
            found: version,
            min: *SUPPORTED_VERSIONS.start(),
            max: *SUPPORTED_VERSIONS.end(),
        });
    }
    // Every kind may be this large: only a larger message needs its kind looked at.
    if bytes.len() > MAX_SNAPSHOT_BYTES {
        let probe: KindProbe =
            rmp_serde::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
        let max = max_bytes(&probe.body.kind);
        if bytes.len() > max {
            return Err(CodecError::TooLarge {
                len: bytes.len(),
                max,
            });
        }
    }
    Ok(())
}

/// Only the body's kind: every other field is skipped without being built.
#[derive(Deserialize)]
struct KindProbe {
    body: KindOnly,
}

#[derive(Deserialize)]
struct KindOnly {
    kind: String,
}

/// The schema version read straight from the bytes when it is the envelope's first field, as
/// [`encode`] writes it: this saves a second pass over the message (a third of a decode).
/// `None` when another encoder put it elsewhere; the caller then probes with serde.
fn peek_version(bytes: &[u8]) -> Option<u16> {
    let rest = match *bytes.first()? {
        0x80..=0x8f => &bytes[1..],
        0xde => bytes.get(3..)?,
        0xdf => bytes.get(5..)?,
        _ => return None,
    };
    // fixstr of 14 bytes, then the name.
    let rest = rest.strip_prefix(b"\xaeschema_version")?;
    match *rest.first()? {
        v @ 0x00..=0x7f => Some(u16::from(v)),
        0xcc => Some(u16::from(*rest.get(1)?)),
        0xcd => Some(u16::from_be_bytes([*rest.get(1)?, *rest.get(2)?])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Reordered {
        producer: &'static str,
        schema_version: u16,
    }

    #[test]
    fn the_version_is_found_wherever_the_encoder_put_it() {
        let first = rmp_serde::to_vec_named(&VersionFirst {
            schema_version: 300,
        })
        .expect("enc");
        assert_eq!(peek_version(&first), Some(300));
        let elsewhere = rmp_serde::to_vec_named(&Reordered {
            producer: "other",
            schema_version: 9,
        })
        .expect("encode");
        assert_eq!(peek_version(&elsewhere), None);
        assert!(matches!(
            decode(&elsewhere),
            Err(CodecError::UnsupportedVersion { found: 9, .. })
        ));
    }

    #[test]
    fn no_kind_has_a_limit_below_the_one_decode_skips_the_kind_probe_under() {
        for (kind, _) in crate::samples::all() {
            let max = max_bytes(kind);
            assert!(
                (MAX_SNAPSHOT_BYTES..=MAX_MESSAGE_BYTES).contains(&max),
                "{kind}: {max}"
            );
        }
    }

    #[derive(serde::Serialize)]
    struct VersionFirst {
        schema_version: u16,
    }
}
