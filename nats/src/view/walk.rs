//! The fast path of [`SnapshotView::decode`](super::SnapshotView::decode): the named-field
//! MessagePack that [`crate::encode`] writes, walked in place byte by byte, with no serde
//! machinery and one allocation (the features list).
//!
//! It answers only for the canonical shape: maps with string keys, each key once, floats
//! for the features, unsigned integers for times, strings for enums. Anything else (a
//! struct written as an array, an integer feature, a duplicate or missing field, a
//! truncated message, nesting deeper than [`MAX_DEPTH`]) gives `None`, and the serde
//! reader decides, with its errors. So the two readers agree wherever this one answers
//! (`nats/tests/fuzz_codec.rs` checks both against the full decode).

use rmp::Marker;

use super::{Features, SnapshotView};
use crate::events::{ContainerState, SnapshotScope};

/// Deeper nesting than this is left to the serde reader.
const MAX_DEPTH: u32 = 64;

/// What the walk found in a whole message.
pub(super) enum Walked<'a> {
    Snapshot(SnapshotView<'a>),
    /// Another kind of event.
    Other,
}

/// Reads an envelope; `None` when it is not in the canonical shape.
pub(super) fn envelope(bytes: &[u8]) -> Option<Walked<'_>> {
    let mut c = Cursor { buf: bytes, at: 0 };
    let (mut event_id, mut correlation_id, mut body) = (None, None, None);
    for _ in 0..c.map()? {
        match c.key()? {
            b"event_id" => once(&mut event_id, c.str()?)?,
            b"correlation_id" => once(&mut correlation_id, c.nil_or(Cursor::str)?)?,
            b"body" => once(&mut body, c.body()?)?,
            _ => c.skip(1)?,
        }
    }
    let event_id = event_id?;
    Some(match body? {
        Some(mut view) => {
            view.event_id = event_id;
            view.correlation_id = correlation_id.flatten();
            Walked::Snapshot(view)
        }
        None => Walked::Other,
    })
}

/// Sets `slot` unless it was set already (a duplicate key is not canonical).
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn marker(&mut self) -> Option<Marker> {
        let byte = *self.buf.get(self.at)?;
        self.at += 1;
        Some(Marker::from_u8(byte))
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let bytes = self.buf.get(self.at..end)?;
        self.at = end;
        Some(bytes)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    /// `None` for nil, else `read`'s value.
    fn nil_or<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.buf.get(self.at) == Some(&0xc0) {
            self.at += 1;
            return Some(None);
        }
        read(self).map(Some)
    }

    /// A string's bytes, not checked as UTF-8: for keys and names compared with known
    /// ASCII ones (half the walk's time went to checking them).
    fn key(&mut self) -> Option<&'a [u8]> {
        let len = match self.marker()? {
            Marker::FixStr(n) => usize::from(n),
            Marker::Str8 => usize::from(self.u8()?),
            Marker::Str16 => usize::from(self.u16()?),
            Marker::Str32 => self.u32()? as usize,
            _ => return None,
        };
        self.take(len)
    }

    /// A string handed out: checked as UTF-8.
    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.key()?).ok()
    }

    fn map(&mut self) -> Option<usize> {
        match self.marker()? {
            Marker::FixMap(n) => Some(usize::from(n)),
            Marker::Map16 => Some(usize::from(self.u16()?)),
            Marker::Map32 => Some(self.u32()? as usize),
            _ => None,
        }
    }

    fn uint(&mut self) -> Option<u64> {
        match self.marker()? {
            Marker::FixPos(n) => Some(u64::from(n)),
            Marker::U8 => Some(u64::from(self.u8()?)),
            Marker::U16 => Some(u64::from(self.u16()?)),
            Marker::U32 => Some(u64::from(self.u32()?)),
            Marker::U64 => self.u64(),
            _ => None,
        }
    }

    fn float(&mut self) -> Option<f64> {
        match self.marker()? {
            Marker::F64 => Some(f64::from_bits(self.u64()?)),
            Marker::F32 => Some(f64::from(f32::from_bits(self.u32()?))),
            _ => None,
        }
    }

    fn bool(&mut self) -> Option<bool> {
        match self.marker()? {
            Marker::True => Some(true),
            Marker::False => Some(false),
            _ => None,
        }
    }

    /// Steps over one value (at nesting `depth`), checking only that it is complete.
    fn skip(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        // bytes of data, then values nested in it
        let (bytes, values) = match self.marker()? {
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
                (0, 0)
            }
            Marker::U8 | Marker::I8 => (1, 0),
            Marker::U16 | Marker::I16 => (2, 0),
            Marker::U32 | Marker::I32 | Marker::F32 => (4, 0),
            Marker::U64 | Marker::I64 | Marker::F64 => (8, 0),
            Marker::FixStr(n) => (usize::from(n), 0),
            Marker::Str8 | Marker::Bin8 => (usize::from(self.u8()?), 0),
            Marker::Str16 | Marker::Bin16 => (usize::from(self.u16()?), 0),
            Marker::Str32 | Marker::Bin32 => (self.u32()? as usize, 0),
            Marker::FixArray(n) => (0, usize::from(n)),
            Marker::Array16 => (0, usize::from(self.u16()?)),
            Marker::Array32 => (0, self.u32()? as usize),
            Marker::FixMap(n) => (0, 2 * usize::from(n)),
            Marker::Map16 => (0, 2 * usize::from(self.u16()?)),
            Marker::Map32 => (0, 2 * self.u32()? as usize),
            // the type byte, then the data
            Marker::FixExt1 => (2, 0),
            Marker::FixExt2 => (3, 0),
            Marker::FixExt4 => (5, 0),
            Marker::FixExt8 => (9, 0),
            Marker::FixExt16 => (17, 0),
            Marker::Ext8 => (1 + usize::from(self.u8()?), 0),
            Marker::Ext16 => (1 + usize::from(self.u16()?), 0),
            Marker::Ext32 => (1 + self.u32()? as usize, 0),
            Marker::Reserved => return None,
        };
        self.take(bytes)?;
        for _ in 0..values {
            self.skip(depth + 1)?;
        }
        Some(())
    }

    /// The body `{kind, data}`: `Some(Some(view))` for a snapshot, `Some(None)` for another
    /// kind. The kind must come first: it says how to read the data.
    fn body(&mut self) -> Option<Option<SnapshotView<'a>>> {
        let (mut kind, mut data) = (None, None);
        for _ in 0..self.map()? {
            match self.key()? {
                b"kind" => once(&mut kind, self.key()? == b"metric_snapshot")?,
                b"data" if kind == Some(true) => once(&mut data, Some(self.snapshot()?))?,
                b"data" if kind == Some(false) && data.is_none() => {
                    self.skip(2)?;
                    data = Some(None);
                }
                b"data" => return None,
                _ => self.skip(2)?,
            }
        }
        match (kind?, data?) {
            (true, Some(view)) => Some(Some(view)),
            (false, None) => Some(None),
            _ => None,
        }
    }

    /// A metric snapshot's data (event id and correlation are the envelope's, set after).
    fn snapshot(&mut self) -> Option<SnapshotView<'a>> {
        let (mut service, mut instance, mut container_id) = (None, None, None);
        let (mut observed_ms, mut state, mut scope) = (None, None, None);
        let (mut health, mut scrape, mut features) = (None, None, None);
        for _ in 0..self.map()? {
            match self.key()? {
                b"service" => once(&mut service, self.str()?)?,
                b"instance" => once(&mut instance, self.str()?)?,
                b"container_id" => once(&mut container_id, self.str()?)?,
                b"observed_ms" => once(&mut observed_ms, self.uint()?)?,
                b"state" => once(&mut state, container_state(self.key()?)?)?,
                b"scope" => once(&mut scope, snapshot_scope(self.key()?)?)?,
                b"health" => once(&mut health, self.nil_or(Self::verdict)?)?,
                b"scrape" => once(&mut scrape, self.nil_or(Self::verdict)?)?,
                b"features" => once(&mut features, self.features()?)?,
                _ => self.skip(3)?,
            }
        }
        Some(SnapshotView {
            event_id: "",
            correlation_id: None,
            service: service?,
            instance: instance?,
            container_id: container_id?,
            observed_ms: observed_ms?,
            state: state?,
            health_ok: health.flatten(),
            scrape_ok: scrape.flatten(),
            scope: scope.unwrap_or_default(),
            features: features?,
        })
    }

    /// Only the `ok` of a health probe or a scrape outcome; the rest is stepped over.
    fn verdict(&mut self) -> Option<bool> {
        let mut ok = None;
        for _ in 0..self.map()? {
            match self.key()? {
                b"ok" => once(&mut ok, self.bool()?)?,
                _ => self.skip(4)?,
            }
        }
        ok
    }

    /// The features, as [`crate::encode`] writes them (a sorted map): names strictly
    /// ascending, so none is there twice (the full decode would keep the last one).
    fn features(&mut self) -> Option<Features<'a>> {
        let len = self.map()?;
        // The length comes from the message: bounded so a lying header costs nothing.
        let mut features: Vec<(&'a str, f64)> = Vec::with_capacity(len.min(64));
        for _ in 0..len {
            let name = self.str()?;
            if features.last().is_some_and(|(last, _)| *last >= name) {
                return None;
            }
            features.push((name, self.float()?));
        }
        Some(Features(features))
    }
}

/// The state as serde names it (`rename_all = "snake_case"`).
fn container_state(name: &[u8]) -> Option<ContainerState> {
    Some(match name {
        b"created" => ContainerState::Created,
        b"running" => ContainerState::Running,
        b"paused" => ContainerState::Paused,
        b"restarting" => ContainerState::Restarting,
        b"removing" => ContainerState::Removing,
        b"exited" => ContainerState::Exited,
        b"dead" => ContainerState::Dead,
        b"unknown" => ContainerState::Unknown,
        _ => return None,
    })
}

fn snapshot_scope(name: &[u8]) -> Option<SnapshotScope> {
    Some(match name {
        b"instance" => SnapshotScope::Instance,
        b"service" => SnapshotScope::Service,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode, samples, Envelope, Event, Replicas, Stage};

    fn snapshot_envelope(edit: impl FnOnce(&mut crate::MetricSnapshot)) -> Envelope {
        let mut s = samples::metric_snapshot();
        edit(&mut s);
        samples::envelope(Stage::Collector, Event::MetricSnapshot(s))
    }

    fn walked(bytes: &[u8]) -> Option<SnapshotView<'_>> {
        match envelope(bytes) {
            Some(Walked::Snapshot(view)) => Some(view),
            _ => None,
        }
    }

    #[test]
    fn the_walk_reads_every_snapshot_encode_writes_as_serde_does() {
        let shapes = [
            snapshot_envelope(|_| {}),
            snapshot_envelope(|s| {
                s.health = None;
                s.scrape = None;
                s.features.clear();
                s.state = ContainerState::Exited;
            }),
            snapshot_envelope(|s| {
                s.scope = SnapshotScope::Service;
                s.instance = crate::SERVICE_INSTANCE.into();
                s.replicas = Some(Replicas {
                    total: 3,
                    running: 2,
                    healthy: 1,
                });
                s.depends_on = vec![crate::ServiceName::new("payments").expect("valid")];
                s.observed_ms = u64::MAX;
                for i in 0..300 {
                    s.features.insert(format!("f{i:03}"), f64::from(i) * -0.5);
                }
            }),
            {
                let mut e = snapshot_envelope(|s| s.health.as_mut().expect("probe").ok = false);
                e.correlation_id = None;
                e
            },
        ];
        for envelope in &shapes {
            let bytes = encode(envelope).expect("encodes");
            let fast = walked(&bytes).expect("the canonical shape is walked");
            let general = SnapshotView::deserialize(&bytes)
                .expect("decodes")
                .expect("a snapshot");
            assert_eq!(fast, general);
        }
    }

    #[test]
    fn other_kinds_are_stepped_over() {
        for (kind, envelope) in samples::all() {
            let bytes = encode(&envelope).expect("encodes");
            match envelope.body {
                Event::MetricSnapshot(_) => assert!(walked(&bytes).is_some(), "{kind}"),
                _ => assert!(
                    matches!(super::envelope(&bytes), Some(Walked::Other)),
                    "{kind}"
                ),
            }
        }
    }

    #[test]
    fn every_state_and_scope_is_named_as_serde_names_it() {
        use ContainerState::*;
        for state in [
            Created, Running, Paused, Restarting, Removing, Exited, Dead, Unknown,
        ] {
            let bytes = rmp_serde::to_vec(&state).expect("encodes");
            let name = Cursor { buf: &bytes, at: 0 }.key().expect("a string");
            assert_eq!(container_state(name), Some(state));
        }
        for scope in [SnapshotScope::Instance, SnapshotScope::Service] {
            let bytes = rmp_serde::to_vec(&scope).expect("encodes");
            let name = Cursor { buf: &bytes, at: 0 }.key().expect("a string");
            assert_eq!(snapshot_scope(name), Some(scope));
        }
    }

    #[test]
    fn other_shapes_are_left_to_serde() {
        let envelope = snapshot_envelope(|_| {});
        // Structs as arrays: not walked; serde's reader answers (here: with its error).
        let arrays = rmp_serde::to_vec(&envelope).expect("encodes");
        assert!(walked(&arrays).is_none());
        let general =
            crate::codec::check(&arrays).and_then(|()| SnapshotView::deserialize(&arrays));
        assert_eq!(
            format!("{:?}", SnapshotView::decode(&arrays)),
            format!("{general:?}")
        );

        let named = encode(&envelope).expect("encodes");
        // Truncated anywhere: no answer from the walk.
        for len in 0..named.len() {
            assert!(walked(&named[..len]).is_none(), "cut at {len}");
        }
        // A key twice: not canonical (serde refuses a field twice).
        let once = [0x81, 0xa2, b'o', b'k', 0xc3];
        assert_eq!(Cursor { buf: &once, at: 0 }.verdict(), Some(true));
        let twice = [0x82, 0xa2, b'o', b'k', 0xc3, 0xa2, b'o', b'k', 0xc2];
        assert_eq!(Cursor { buf: &twice, at: 0 }.verdict(), None);
    }

    #[test]
    fn features_out_of_order_or_not_floats_are_left_to_serde() {
        let mut features = Vec::new();
        // fixmap of 2: "b" -> 1.0, "a" -> 2.0 (descending)
        features.extend([0x82, 0xa1, b'b', 0xcb]);
        features.extend(1.0f64.to_be_bytes());
        features.extend([0xa1, b'a', 0xcb]);
        features.extend(2.0f64.to_be_bytes());
        assert!(Cursor {
            buf: &features,
            at: 0
        }
        .features()
        .is_none());
        let ascending = [0x82, 0xa1, b'a', 0x01, 0xa1, b'b', 0x02];
        assert!(
            Cursor {
                buf: &ascending,
                at: 0
            }
            .features()
            .is_none(),
            "integers are serde's to convert"
        );
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_not_walked() {
        let deep: Vec<u8> = std::iter::repeat_n(0x91, 200).chain([0xc0]).collect();
        assert!(Cursor { buf: &deep, at: 0 }.skip(0).is_none());
        let shallow: Vec<u8> = std::iter::repeat_n(0x91, 10).chain([0xc0]).collect();
        let mut c = Cursor {
            buf: &shallow,
            at: 0,
        };
        assert!(c.skip(0).is_some());
        assert_eq!(c.at, shallow.len());
    }
}
