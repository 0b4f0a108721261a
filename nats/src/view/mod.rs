//! A metric snapshot read in place, for the paths that judge many of them (the detector's
//! scoring benchmark, replays of the metrics stream).
//!
//! [`decode`](crate::decode) builds every string and a map of the features, through serde.
//! [`SnapshotView::decode`] makes the same checks on what it reads (size, schema version,
//! service name, types) and borrows the strings from the message instead, reads the
//! features into a list sorted by name, and steps over what a judge does not need (the
//! probes' details, replicas, dependencies). The message [`crate::encode`] writes is walked
//! byte by byte ([`walk`]); any other shape goes through serde. The wire is the same: this
//! is another reader of the named-field MessagePack, not another format. Costs are printed
//! by `cargo bench -p immune-detector --bench scoring`.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::codec::{check, CodecError};
use crate::events::{ContainerState, SnapshotScope};
use crate::service::is_token;

mod walk;

/// The parts of a [`crate::MetricSnapshot`] envelope that judging it needs, borrowed from
/// the message.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotView<'a> {
    pub event_id: &'a str,
    pub correlation_id: Option<&'a str>,
    /// A valid service name (checked as [`crate::ServiceName`] checks it).
    pub service: &'a str,
    pub instance: &'a str,
    pub container_id: &'a str,
    pub observed_ms: u64,
    pub state: ContainerState,
    /// The health probe's verdict, when one was made.
    pub health_ok: Option<bool>,
    /// The scrape's verdict, when one was made.
    pub scrape_ok: Option<bool>,
    pub scope: SnapshotScope,
    pub features: Features<'a>,
}

/// The named features of a snapshot, by name, each name once (as the full decode's map).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Features<'a>(pub Vec<(&'a str, f64)>);

impl<'a> Features<'a> {
    /// The value of `name`, if the snapshot has it.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> SnapshotView<'a> {
    /// Reads a metric snapshot in place. `Ok(None)` when the message holds another kind (or
    /// was written by an encoder that puts the body's data before its kind): read it with
    /// [`crate::decode`]. Refuses, with [`crate::decode`]'s errors, a message of the wrong
    /// size or schema version, an invalid service name, and a field it reads that has the
    /// wrong type; the fields it does not read are stepped over, not checked.
    pub fn decode(bytes: &'a [u8]) -> Result<Option<Self>, CodecError> {
        check(bytes)?;
        let view = match walk::envelope(bytes) {
            Some(walk::Walked::Snapshot(view)) => view,
            Some(walk::Walked::Other) => return Ok(None),
            // Not the canonical shape: serde reads it, and says what is wrong.
            None => match Self::deserialize(bytes)? {
                Some(view) => view,
                None => return Ok(None),
            },
        };
        if !is_token(view.service) {
            return Err(CodecError::Malformed(format!(
                "invalid service name {:?}",
                view.service
            )));
        }
        Ok(Some(view))
    }

    /// The general reader: whatever MessagePack shape serde accepts.
    fn deserialize(bytes: &'a [u8]) -> Result<Option<Self>, CodecError> {
        let wire: WireEnvelope<'a> =
            rmp_serde::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
        let Body::Snapshot(s) = wire.body else {
            return Ok(None);
        };
        Ok(Some(SnapshotView {
            event_id: wire.event_id,
            correlation_id: wire.correlation_id,
            service: s.service,
            instance: s.instance,
            container_id: s.container_id,
            observed_ms: s.observed_ms,
            state: s.state,
            health_ok: s.health.map(|p| p.ok),
            scrape_ok: s.scrape.map(|p| p.ok),
            scope: s.scope,
            features: s.features,
        }))
    }
}

#[derive(Deserialize)]
struct WireEnvelope<'a> {
    #[serde(borrow)]
    event_id: &'a str,
    #[serde(borrow, default)]
    correlation_id: Option<&'a str>,
    #[serde(borrow)]
    body: Body<'a>,
}

/// The envelope's body: a snapshot, or anything else (skipped unread).
enum Body<'a> {
    Snapshot(WireSnapshot<'a>),
    Other,
}

#[derive(Deserialize)]
struct WireSnapshot<'a> {
    #[serde(borrow)]
    service: &'a str,
    #[serde(borrow)]
    instance: &'a str,
    #[serde(borrow)]
    container_id: &'a str,
    observed_ms: u64,
    state: ContainerState,
    health: Option<Verdict>,
    scrape: Option<Verdict>,
    #[serde(borrow)]
    features: Features<'a>,
    #[serde(default)]
    scope: SnapshotScope,
}

/// Only the `ok` of a health probe or a scrape outcome.
#[derive(Deserialize)]
struct Verdict {
    ok: bool,
}

impl<'de: 'a, 'a> Deserialize<'de> for Body<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BodyVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for BodyVisitor<'a> {
            type Value = Body<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an event body {kind, data}")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut snapshot = None;
                // Whether the kind, once read, is a snapshot's.
                let mut is_snapshot = None;
                while let Some(key) = map.next_key::<&'de str>()? {
                    match (key, is_snapshot) {
                        ("kind", _) => {
                            is_snapshot = Some(map.next_value::<&'de str>()? == "metric_snapshot")
                        }
                        ("data", Some(true)) => snapshot = Some(map.next_value()?),
                        // Data before its kind, or another kind's data: not read here.
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                match (is_snapshot, snapshot) {
                    (Some(_), Some(s)) => Ok(Body::Snapshot(s)),
                    // Another kind, or a snapshot whose data came first or not at all: the
                    // caller reads it with the full decoder, which says what is wrong.
                    (Some(_), None) => Ok(Body::Other),
                    (None, _) => Err(de::Error::missing_field("kind")),
                }
            }
        }
        d.deserialize_map(BodyVisitor(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Features<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FeaturesVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for FeaturesVisitor<'a> {
            type Value = Features<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of feature names to numbers")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                // The size hint comes from the message: bounded so a lying header costs nothing.
                let mut features = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(entry) = map.next_entry::<&'de str, f64>()? {
                    features.push(entry);
                }
                // As the full decode's map holds them: by name, the last of a name kept.
                features.reverse();
                features.sort_by(|a: &(&str, f64), b| a.0.cmp(b.0));
                features.dedup_by(|later, earlier| later.0 == earlier.0);
                Ok(Features(features))
            }
        }
        d.deserialize_map(FeaturesVisitor(PhantomData))
    }
}
