//! The bus contract of immune.
//!
//! Every stage talks to every other stage only through NATS subjects that carry the events
//! defined here, wrapped in an [`Envelope`] and encoded as MessagePack with named fields.
//! This crate owns the types, the subjects, the stream and consumer names and the codec, and
//! does no I/O of its own, so producers and consumers can never disagree about the wire.
//!
//! - [`audit`]: the audit trail's codes, typed once.
//! - [`control`]: the keys of the control buckets (kill switches, maintenance windows).
//! - [`events`]: every event body, one enum [`Event`] so one decoder serves every subject.
//! - [`subject`]: the subjects, derived from the event itself; services never build strings.
//! - [`streams`]: the JetStream streams, their retention, and the durable consumer of each stage.
//! - [`codec`]: encode/decode with a size limit, a schema-version check and typed errors.
//! - [`view`]: a metric snapshot read in place, for paths that judge many of them.

pub mod audit;
pub mod codec;
pub mod control;
pub mod envelope;
pub mod events;
pub mod samples;
pub mod service;
pub mod streams;
pub mod subject;
pub mod view;

pub use audit::AuditCode;
pub use codec::{
    decode, encode, max_bytes, CodecError, MAX_EVENT_BYTES, MAX_MESSAGE_BYTES, MAX_SNAPSHOT_BYTES,
};
pub use envelope::{Envelope, EventId, Producer, Stage, SCHEMA_VERSION};
pub use events::*;
pub use service::{InvalidName, ServiceName};
pub use subject::Subject;
pub use view::SnapshotView;
