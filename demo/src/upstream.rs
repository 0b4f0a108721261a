//! Calls to one upstream spread over every replica behind its name.
//!
//! A client that pools one connection per host name sends everything to the first address
//! it resolved, so a replica started with the same network alias (Docker's DNS then answers
//! the alias with every replica's address) never gets traffic. Here each upstream's host is
//! resolved again at most once a second, and each call goes to the next address in turn
//! (round robin over the addresses the name has now), with the `Host` header of the name. A
//! new replica gets its share within a second, a removed one drops out within a second, and
//! a failed resolution keeps the last good addresses (and is counted).
//!
//! [`Rotation`] and [`due`] are the pure part, tested without a network.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Url;

/// How often an upstream's name is resolved again, at most.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(1);
/// A resolution that takes longer counts as failed.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The addresses a name has and which one the next call goes to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    addresses: Vec<SocketAddr>,
    next: usize,
}

impl Rotation {
    /// Takes the addresses a resolution found (in a stable order, whatever order the resolver
    /// answered in), or keeps the last good ones when it found none; false then.
    pub fn refresh(&mut self, mut found: Vec<SocketAddr>) -> bool {
        if found.is_empty() {
            return false;
        }
        found.sort();
        found.dedup();
        if found != self.addresses {
            // Carry on from the address the next call would have gone to, if it is still there.
            let upcoming = self.addresses.get(self.next).copied();
            self.next = upcoming
                .and_then(|a| found.iter().position(|f| *f == a))
                .unwrap_or(0);
            self.addresses = found;
        }
        true
    }

    /// The address for the next call, each in turn; none before the first resolution.
    pub fn pick(&mut self) -> Option<SocketAddr> {
        let address = *self.addresses.get(self.next)?;
        self.next = (self.next + 1) % self.addresses.len();
        Some(address)
    }

    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }
}

/// Whether a name last resolved at `last` is to be resolved again at `now`.
pub fn due(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|at| now.saturating_duration_since(at) >= RESOLVE_EVERY)
}

/// Why an upstream URL cannot be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {0:?} is not an http URL with a host")]
    BadUrl(String),
}

/// One upstream base URL (`http://orders:8080`) and the replicas behind its host.
#[derive(Debug)]
pub struct Upstream {
    url: Url,
    host: String,
    port: u16,
    /// The `Host` header every call carries: the name, not the address called.
    authority: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    rotation: Rotation,
    resolved_at: Option<Instant>,
}

/// What a resolution did, for the caller to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// Not due: the addresses of the last second stand.
    Cached,
    Fresh,
    /// Found nothing or failed: the last good addresses stand.
    Failed,
}

impl Upstream {
    pub fn parse(base: &str) -> Result<Self, UpstreamError> {
        let bad = || UpstreamError::BadUrl(base.to_string());
        let url = Url::parse(base).map_err(|_| bad())?;
        if url.scheme() != "http" {
            return Err(bad());
        }
        let host = url.host_str().ok_or_else(bad)?.to_string();
        let port = url.port_or_known_default().ok_or_else(bad)?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        Ok(Self {
            url,
            host,
            port,
            authority,
            state: Mutex::new(State::default()),
        })
    }

    /// The host name, as a metric label.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The addresses the name had at its last good resolution.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.state
            .lock()
            .map(|s| s.rotation.addresses().to_vec())
            .unwrap_or_default()
    }

    /// Resolves the name again if it is due (or nothing is known yet), so that at most one
    /// caller a second does.
    pub async fn resolve(&self) -> Resolved {
        let now = Instant::now();
        let claimed = match self.state.lock() {
            Ok(mut state) => {
                let unknown = state.rotation.addresses().is_empty();
                let claimed = unknown || due(state.resolved_at, now);
                if claimed {
                    state.resolved_at = Some(now);
                }
                claimed
            }
            Err(_) => false,
        };
        if !claimed {
            return Resolved::Cached;
        }
        let found: Vec<SocketAddr> = match tokio::time::timeout(
            RESOLVE_TIMEOUT,
            tokio::net::lookup_host((self.host.as_str(), self.port)),
        )
        .await
        {
            Ok(Ok(addresses)) => addresses.collect(),
            _ => Vec::new(),
        };
        let refreshed = self
            .state
            .lock()
            .map(|mut s| s.rotation.refresh(found))
            .unwrap_or(false);
        if refreshed {
            Resolved::Fresh
        } else {
            Resolved::Failed
        }
    }

    /// The URL of `path` on the next replica in turn; none while the name has no address.
    pub fn next_url(&self, path: &str) -> Option<Url> {
        let address = self.state.lock().ok()?.rotation.pick()?;
        let mut url = self.url.join(path).ok()?;
        url.set_ip_host(address.ip()).ok()?;
        url.set_port(Some(address.port())).ok()?;
        Some(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([172, 18, 0, last], 8080))
    }

    fn picks(rotation: &mut Rotation, n: usize) -> Vec<SocketAddr> {
        (0..n).filter_map(|_| rotation.pick()).collect()
    }

    #[test]
    fn nothing_to_pick_before_the_first_resolution() {
        assert_eq!(Rotation::default().pick(), None);
    }

    #[test]
    fn calls_go_round_every_address_in_a_stable_order() {
        let mut rotation = Rotation::default();
        assert!(rotation.refresh(vec![addr(3), addr(2)]));
        assert_eq!(
            picks(&mut rotation, 4),
            vec![addr(2), addr(3), addr(2), addr(3)]
        );
        // The resolver answering in another order changes nothing.
        assert!(rotation.refresh(vec![addr(2), addr(3)]));
        assert_eq!(picks(&mut rotation, 2), vec![addr(2), addr(3)]);
    }

    #[test]
    fn a_new_replica_gets_its_share_at_once() {
        let mut rotation = Rotation::default();
        rotation.refresh(vec![addr(2)]);
        assert_eq!(picks(&mut rotation, 2), vec![addr(2), addr(2)]);
        rotation.refresh(vec![addr(2), addr(5)]);
        let next = picks(&mut rotation, 4);
        assert_eq!(next.iter().filter(|a| **a == addr(5)).count(), 2);
        assert_eq!(next.iter().filter(|a| **a == addr(2)).count(), 2);
    }

    #[test]
    fn a_removed_replica_drops_out() {
        let mut rotation = Rotation::default();
        rotation.refresh(vec![addr(2), addr(3), addr(4)]);
        assert_eq!(rotation.pick(), Some(addr(2)));
        rotation.refresh(vec![addr(2), addr(4)]);
        assert_eq!(
            picks(&mut rotation, 4),
            vec![addr(2), addr(4), addr(2), addr(4)]
        );
    }

    #[test]
    fn the_turn_carries_on_across_a_refresh() {
        let mut rotation = Rotation::default();
        rotation.refresh(vec![addr(2), addr(3)]);
        assert_eq!(rotation.pick(), Some(addr(2)));
        // addr(3) is next; a new replica does not send the turn back to the start.
        rotation.refresh(vec![addr(1), addr(2), addr(3)]);
        assert_eq!(picks(&mut rotation, 3), vec![addr(3), addr(1), addr(2)]);
    }

    #[test]
    fn a_failed_resolution_keeps_the_last_good_addresses() {
        let mut rotation = Rotation::default();
        rotation.refresh(vec![addr(2), addr(3)]);
        assert!(!rotation.refresh(Vec::new()));
        assert_eq!(rotation.addresses(), &[addr(2), addr(3)]);
        assert_eq!(picks(&mut rotation, 2).len(), 2);
    }

    #[test]
    fn resolved_again_at_most_once_a_second() {
        let start = Instant::now();
        assert!(due(None, start));
        assert!(!due(Some(start), start + Duration::from_millis(999)));
        assert!(due(Some(start), start + RESOLVE_EVERY));
    }

    #[test]
    fn a_call_goes_to_an_address_and_names_the_host() {
        let upstream = Upstream::parse("http://orders:8080").expect("a valid upstream");
        assert_eq!(upstream.authority(), "orders:8080");
        assert_eq!(upstream.next_url("/"), None, "no address yet");
        upstream
            .state
            .lock()
            .expect("state")
            .rotation
            .refresh(vec![addr(7)]);
        assert_eq!(
            upstream.next_url("/").map(|u| u.to_string()),
            Some("http://172.18.0.7:8080/".to_string())
        );
        assert_eq!(
            Upstream::parse("http://auth").map(|u| u.authority().to_string()),
            Ok("auth".to_string())
        );
    }

    #[test]
    fn only_http_urls_with_a_host() {
        for bad in ["orders:8080", "https://orders", "file:///x", ""] {
            assert_eq!(
                Upstream::parse(bad).map(|_| ()),
                Err(UpstreamError::BadUrl(bad.to_string())),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn resolves_a_name_and_then_waits_a_second() {
        let upstream = Upstream::parse("http://localhost:8080").expect("a valid upstream");
        assert_eq!(upstream.resolve().await, Resolved::Fresh);
        assert!(!upstream.addresses().is_empty());
        assert_eq!(upstream.resolve().await, Resolved::Cached);
    }
}
