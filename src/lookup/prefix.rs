//! Answers by network: when a provider's whole answer depends only on the network
//! that announces an address (its ASN section, e.g. IPGeolocation `/v3/asn`), the
//! answer is kept for the announced prefix it names (`asn.route`), and every other
//! address of that prefix is answered without a call.
//!
//! Contract: [`Networks::get`] gives the record of the longest unexpired prefix that
//! holds the address, with what is left of its TTL; a prefix is kept for the TTL of
//! the answer that named it; at most `capacity` prefixes are held (least recently
//! used go first). Time is tokio's, so paused-time tests move it.
//!
//! Threat sections are per address at every provider this crate speaks to, so a
//! provider whose answer carries one is never answered by network
//! ([`crate::lookup::providers::Provider::per_network`] says which are).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;

use ipnet::IpNet;
use lru::LruCache;
use tokio::time::Instant;

use super::record::IntelRecord;

/// Announced prefixes and the record of each.
pub struct Networks {
    inner: Mutex<Inner>,
}

struct Inner {
    /// By the prefix (its network address and length).
    nets: LruCache<IpNet, (IntelRecord, Instant)>,
    /// Prefix lengths held, per family, longest first when iterated in reverse.
    v4: BTreeSet<u8>,
    v6: BTreeSet<u8>,
}

impl Networks {
    /// Holds at most `capacity` prefixes.
    pub fn new(capacity: NonZeroUsize) -> Self {
        Networks {
            inner: Mutex::new(Inner {
                nets: LruCache::new(capacity),
                v4: BTreeSet::new(),
                v6: BTreeSet::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers the answer for `ip` under the prefix its record names, if that
    /// prefix parses and holds `ip`; returns the prefix.
    pub fn learn(&self, ip: IpAddr, record: &IntelRecord, ttl: Duration) -> Option<IpNet> {
        let route = record.asn.as_ref()?.route.as_deref()?;
        let net: IpNet = route.trim().parse().ok()?;
        let net = net.trunc();
        if !net.contains(&ip) || ttl.is_zero() {
            return None;
        }
        let expires = Instant::now().checked_add(ttl)?;
        let mut inner = self.lock();
        match net {
            IpNet::V4(n) => inner.v4.insert(n.prefix_len()),
            IpNet::V6(n) => inner.v6.insert(n.prefix_len()),
        };
        inner.nets.put(net, (record.clone(), expires));
        Some(net)
    }

    /// The record of the longest unexpired prefix holding `ip`, and its TTL left.
    pub fn get(&self, ip: IpAddr) -> Option<(IntelRecord, Duration)> {
        let mut inner = self.lock();
        let lengths: Vec<u8> = match ip {
            IpAddr::V4(_) => inner.v4.iter().rev().copied().collect(),
            IpAddr::V6(_) => inner.v6.iter().rev().copied().collect(),
        };
        let now = Instant::now();
        for len in lengths {
            let Ok(net) = IpNet::new(ip, len) else {
                continue;
            };
            let net = net.trunc();
            match inner.nets.get(&net) {
                Some((record, expires)) if *expires > now => {
                    return Some((record.clone(), *expires - now));
                }
                Some(_) => {
                    inner.nets.pop(&net);
                }
                None => {}
            }
        }
        None
    }

    /// Prefixes held (expired ones included until met).
    pub fn len(&self) -> usize {
        self.lock().nets.len()
    }

    /// True when no prefix is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::record::AsnInfo;

    fn record(asn: u32, route: &str) -> IntelRecord {
        IntelRecord {
            asn: Some(AsnInfo {
                number: Some(asn),
                route: Some(route.into()),
                ..AsnInfo::default()
            }),
            ..IntelRecord::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets() -> Networks {
        Networks::new(NonZeroUsize::new(3).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn the_longest_prefix_holding_the_address_answers_until_its_ttl() {
        let n = nets();
        let hour = Duration::from_secs(3600);
        assert!(n
            .learn(ip("78.46.1.1"), &record(24940, "78.46.0.0/15"), hour)
            .is_some());
        assert!(n
            .learn(ip("78.47.9.1"), &record(1, "78.47.9.0/24"), hour / 2)
            .is_some());
        assert_eq!(
            n.get(ip("78.46.200.7")).unwrap().0,
            record(24940, "78.46.0.0/15")
        );
        assert_eq!(
            n.get(ip("78.47.9.200")).unwrap().0,
            record(1, "78.47.9.0/24")
        );
        assert!(n.get(ip("78.48.0.1")).is_none());
        tokio::time::advance(hour / 2).await;
        // The /24 expired: the /15 holds the address still.
        let (r, left) = n.get(ip("78.47.9.200")).unwrap();
        assert_eq!(r, record(24940, "78.46.0.0/15"));
        assert_eq!(left, hour / 2);
        tokio::time::advance(hour / 2).await;
        assert!(n.get(ip("78.46.200.7")).is_none());
        assert!(n.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_route_that_does_not_hold_the_address_or_does_not_parse_is_ignored() {
        let n = nets();
        let hour = Duration::from_secs(3600);
        assert!(n
            .learn(ip("9.9.9.9"), &record(1, "78.46.0.0/15"), hour)
            .is_none());
        assert!(n
            .learn(ip("9.9.9.9"), &record(1, "9.9.9.0/33"), hour)
            .is_none());
        assert!(n
            .learn(ip("9.9.9.9"), &record(1, "not a net"), hour)
            .is_none());
        assert!(n
            .learn(ip("9.9.9.9"), &IntelRecord::default(), hour)
            .is_none());
        // Host bits set in the route are cleared.
        assert_eq!(
            n.learn(ip("9.9.9.9"), &record(1, "9.9.9.1/24"), hour),
            Some("9.9.9.0/24".parse().unwrap())
        );
        assert!(n
            .learn(ip("2a01:4f8::1"), &record(2, "2a01:4f8::/32"), hour)
            .is_some());
        assert!(n.get(ip("2a01:4f8:ffff::9")).is_some());
        assert!(n.get(ip("2a01:4f9::1")).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_capacity_prefixes_are_held() {
        let n = nets();
        let hour = Duration::from_secs(3600);
        for i in 0..10u8 {
            n.learn(
                ip(&format!("10.{i}.0.1")),
                &record(1, &format!("10.{i}.0.0/16")),
                hour,
            );
        }
        assert_eq!(n.len(), 3);
        assert!(n.get(ip("10.9.1.1")).is_some());
        assert!(n.get(ip("10.0.1.1")).is_none());
    }
}
