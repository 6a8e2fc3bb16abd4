//! The answer cache of one provider: sharded LRU with a TTL per entry.
//!
//! Contract: an answer is served from the cache until its TTL passes (`ttl` for
//! `Found`, the shorter `negative_ttl` for `NoData`); errors are never stored. The
//! cache is bounded by entries *and* by approximate bytes; past either bound the
//! least recently used entry of the shard goes. Time comes from `tokio::time`, so
//! tests drive expiry with paused time.
//!
//! Memory: a million cached addresses must fit in well under 256 MiB, so an entry
//! does not hold an [`IntelRecord`] (about 330 bytes inline) but three pointers to
//! *interned* sections: the ASN, geo and threat parts of a record repeat across
//! thousands of addresses (same AS, same country, same score and flags), so each
//! distinct section is stored once behind an `Arc` and shared. An entry is then
//! 32 bytes of value, about 120 bytes all-in with the LRU node and hash table
//! (`benches/cache_memory.rs` measures it). Interned sections that no entry uses
//! any more are swept when an interner has doubled since its last sweep.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lru::LruCache;
use prometheus::{IntCounter, IntGauge};
use tokio::time::Instant;

use super::providers::Answer;
use super::record::{AsnInfo, GeoInfo, IntelRecord, ThreatInfo};

/// Why cache settings are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The negative TTL is longer than the positive one.
    #[error("negative ttl {negative:?} is longer than the ttl {positive:?}")]
    NegativeTtlTooLong {
        positive: Duration,
        negative: Duration,
    },
    /// The byte bound cannot hold even one entry per shard.
    #[error("cache max bytes {max_bytes} is below {min} (one entry per shard)")]
    TooFewBytes { max_bytes: usize, min: usize },
}

/// Validated cache settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// How long a `Found` answer is served.
    pub ttl: Duration,
    /// How long a `NoData` answer is served (shorter: new allocations get announced).
    pub negative_ttl: Duration,
    /// Most entries over all shards.
    pub max_entries: NonZeroUsize,
    /// Most approximate bytes over all shards (entries plus sections they brought in).
    pub max_bytes: NonZeroUsize,
    /// Number of shards (independent locks).
    pub shards: NonZeroUsize,
}

impl CacheSettings {
    /// Checks the settings; every problem in one error would need a list, and
    /// there are only two that can clash, so the first is returned.
    pub fn validate(&self) -> Result<(), CacheError> {
        if self.negative_ttl > self.ttl {
            return Err(CacheError::NegativeTtlTooLong {
                positive: self.ttl,
                negative: self.negative_ttl,
            });
        }
        let min = ENTRY_BYTES * self.shards.get();
        if self.max_bytes.get() < min {
            return Err(CacheError::TooFewBytes {
                max_bytes: self.max_bytes.get(),
                min,
            });
        }
        Ok(())
    }
}

/// Counters and gauges of one cache (prometheus handles, or unregistered ones).
#[derive(Clone)]
pub struct CacheMetrics {
    pub hits: IntCounter,
    /// Hits by where the entry came from, indexed by [`Origin`].
    pub hits_by_origin: [IntCounter; 3],
    pub misses: IntCounter,
    pub evictions: IntCounter,
    pub expirations: IntCounter,
    pub entries: IntGauge,
    pub bytes: IntGauge,
}

impl CacheMetrics {
    /// Handles registered nowhere (tests, benches).
    pub fn unregistered() -> Self {
        let c = |n: &str| IntCounter::new(n, n).expect("valid metric name");
        let g = |n: &str| IntGauge::new(n, n).expect("valid metric name");
        CacheMetrics {
            hits: c("hits"),
            hits_by_origin: [c("hits_local"), c("hits_table"), c("hits_prefix")],
            misses: c("misses"),
            evictions: c("evictions"),
            expirations: c("expirations"),
            entries: g("entries"),
            bytes: g("bytes"),
        }
    }
}

/// Where a cached answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// This process asked the provider.
    Local = 0,
    /// Another replica asked, and the shared intel table brought the answer.
    Table = 1,
    /// Another address of the same announced prefix was asked ([`super::prefix`]).
    Prefix = 2,
}

impl Origin {
    /// The `origin` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Local => "local",
            Origin::Table => "table",
            Origin::Prefix => "prefix",
        }
    }
}

/// Which lookups [`Cache::probe`] counts in the hit/miss metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Hits and misses.
    Both,
    /// Hits only (a miss will be counted by a later probe).
    HitsOnly,
    /// Neither (a second look for the same lookup).
    None,
}

/// Approximate bytes of one entry with its LRU node and hash-table slot: the node
/// (key 17 + value 40 + two links, rounded to the allocator's 80-byte class) plus
/// a table slot (16 bytes + control byte) at the table's typical 50-87 % load.
pub const ENTRY_BYTES: usize = 80 + 32;

/// Expiry ticks are 100 ms since the cache's epoch: a u32 lasts 13 years.
const TICK_MS: u64 = 100;

/// One cached answer. All three sections `None` is `NoData`.
#[derive(Clone)]
struct Entry {
    asn: Option<Arc<AsnInfo>>,
    geo: Option<Arc<GeoInfo>>,
    threat: Option<Arc<ThreatInfo>>,
    /// Expiry in ticks since the epoch (exclusive).
    expires: u32,
    /// Bytes of newly interned sections this entry brought in.
    charged: u32,
    origin: Origin,
}

impl Entry {
    fn answer(&self) -> Answer {
        if self.asn.is_none() && self.geo.is_none() && self.threat.is_none() {
            return Answer::NoData;
        }
        Answer::Found(IntelRecord {
            asn: self.asn.as_deref().cloned(),
            geo: self.geo.as_deref().cloned(),
            threat: self.threat.as_deref().cloned(),
        })
    }

    fn bytes(&self) -> usize {
        ENTRY_BYTES + self.charged as usize
    }
}

struct Shard {
    lru: LruCache<IpAddr, Entry>,
    bytes: usize,
}

/// The sharded cache; `get` and `insert` take `&self`.
pub struct Cache {
    shards: Box<[Mutex<Shard>]>,
    interner: Mutex<Interner>,
    epoch: Instant,
    ttl: Duration,
    negative_ttl: Duration,
    entries_per_shard: usize,
    bytes_per_shard: usize,
    metrics: CacheMetrics,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a shard lock leaves a consistent LRU (no partial
    // updates cross an await or a user callback), so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    /// A cache with validated settings.
    pub fn try_new(settings: &CacheSettings, metrics: CacheMetrics) -> Result<Self, CacheError> {
        settings.validate()?;
        let n = settings.shards.get();
        let entries_per_shard = settings.max_entries.get().div_ceil(n);
        let shards = (0..n)
            .map(|_| {
                Mutex::new(Shard {
                    lru: LruCache::unbounded(),
                    bytes: 0,
                })
            })
            .collect();
        Ok(Cache {
            shards,
            interner: Mutex::new(Interner::default()),
            epoch: Instant::now(),
            ttl: settings.ttl,
            negative_ttl: settings.negative_ttl,
            entries_per_shard,
            bytes_per_shard: settings.max_bytes.get() / n,
            metrics,
        })
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<Shard> {
        let mut h = std::hash::DefaultHasher::new();
        ip.hash(&mut h);
        &self.shards[(h.finish() as usize) % self.shards.len()]
    }

    fn now_ticks(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 / TICK_MS
    }

    /// The cached answer, if present and not expired; counts a hit or a miss.
    pub fn get(&self, ip: IpAddr) -> Option<Answer> {
        self.probe(ip, Count::Both)
    }

    /// As [`Cache::get`], counting only what `count` says (a caller that tries the
    /// cache twice for one lookup counts the miss once).
    pub fn probe(&self, ip: IpAddr, count: Count) -> Option<Answer> {
        let now = self.now_ticks();
        let mut shard = lock(self.shard(&ip));
        let found = match shard.lru.get(&ip) {
            Some(e) if u64::from(e.expires) > now => Some((e.answer(), e.origin)),
            Some(_) => {
                let (_, e) = shard.lru.pop_entry(&ip).expect("entry just seen");
                shard.bytes -= e.bytes();
                self.metrics.expirations.inc();
                self.metrics.entries.dec();
                self.metrics.bytes.sub(e.bytes() as i64);
                None
            }
            None => None,
        };
        drop(shard);
        match (&found, count) {
            (Some((_, origin)), Count::Both | Count::HitsOnly) => {
                self.metrics.hits.inc();
                self.metrics.hits_by_origin[*origin as usize].inc();
            }
            (None, Count::Both) => self.metrics.misses.inc(),
            _ => {}
        }
        found.map(|(answer, _)| answer)
    }

    /// Counts a lookup that [`Cache::probe`] with [`Count::HitsOnly`] did not find:
    /// a hit of `origin` when it was answered otherwise without a call, else a miss.
    pub fn count(&self, hit: Option<Origin>) {
        match hit {
            Some(origin) => {
                self.metrics.hits.inc();
                self.metrics.hits_by_origin[origin as usize].inc();
            }
            None => self.metrics.misses.inc(),
        }
    }

    /// The cached answer and how long it is still good for, counting nothing.
    pub fn remaining(&self, ip: IpAddr) -> Option<(Answer, Duration)> {
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let shard = lock(self.shard(&ip));
        let e = shard.lru.peek(&ip)?;
        let expires_ms = u64::from(e.expires).saturating_mul(TICK_MS);
        (expires_ms > now_ms).then(|| (e.answer(), Duration::from_millis(expires_ms - now_ms)))
    }

    /// Stores an answer with the TTL of its kind; evicts least recently used entries
    /// of the shard past the entry or byte bound.
    pub fn insert(&self, ip: IpAddr, answer: &Answer) {
        self.insert_for(ip, answer, self.ttl_of(answer), Origin::Local);
    }

    /// The TTL an answer of this kind gets.
    pub fn ttl_of(&self, answer: &Answer) -> Duration {
        match answer {
            Answer::Found(r) if !r.is_empty() => self.ttl,
            _ => self.negative_ttl,
        }
    }

    /// Stores an answer for `ttl` (what is left of it, when it comes from the
    /// shared table), remembering its origin.
    pub fn insert_for(&self, ip: IpAddr, answer: &Answer, ttl: Duration, origin: Origin) {
        let record = match answer {
            Answer::Found(r) if !r.is_empty() => Some(r),
            _ => None,
        };
        // The TTL comes from the config: saturate rather than truncate or overflow.
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let expires_ms = millis(self.epoch.elapsed()).saturating_add(millis(ttl));
        let expires = expires_ms.div_ceil(TICK_MS).min(u64::from(u32::MAX)) as u32;
        let mut entry = Entry {
            asn: None,
            geo: None,
            threat: None,
            expires,
            charged: 0,
            origin,
        };
        if let Some(r) = record {
            let mut interner = lock(&self.interner);
            let mut charged = 0;
            entry.asn = r.asn.as_ref().map(|a| interner.asn.intern(a, &mut charged));
            entry.geo = r.geo.as_ref().map(|g| interner.geo.intern(g, &mut charged));
            entry.threat = r
                .threat
                .as_ref()
                .map(|t| interner.threat.intern(t, &mut charged));
            entry.charged = charged.min(u32::MAX as usize) as u32;
        }
        let added = entry.bytes();
        let mut shard = lock(self.shard(&ip));
        if let Some(old) = shard.lru.put(ip, entry) {
            shard.bytes -= old.bytes();
            self.metrics.bytes.sub(old.bytes() as i64);
            self.metrics.entries.dec();
        }
        shard.bytes += added;
        self.metrics.bytes.add(added as i64);
        self.metrics.entries.inc();
        while shard.lru.len() > self.entries_per_shard
            || (shard.bytes > self.bytes_per_shard && shard.lru.len() > 1)
        {
            let Some((_, old)) = shard.lru.pop_lru() else {
                break;
            };
            shard.bytes -= old.bytes();
            self.metrics.evictions.inc();
            self.metrics.entries.dec();
            self.metrics.bytes.sub(old.bytes() as i64);
        }
    }

    /// Entries over all shards (expired ones included until they are touched).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).lru.len()).sum()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate bytes held, entries plus the sections they brought in.
    pub fn approx_bytes(&self) -> usize {
        self.shards.iter().map(|s| lock(s).bytes).sum()
    }

    /// Distinct interned sections (ASN, geo, threat) currently kept.
    pub fn interned(&self) -> (usize, usize, usize) {
        let i = lock(&self.interner);
        (i.asn.len, i.geo.len, i.threat.len)
    }
}

/// Hashing by content for record sections (they hold `f64`, so no `Hash` derive).
trait ContentHash: PartialEq + Clone {
    fn content_hash(&self) -> u64;
    /// Heap and inline bytes of one interned copy.
    fn approx_bytes(&self) -> usize;
}

fn hash_str<H: Hasher>(h: &mut H, s: &Option<Arc<str>>) {
    s.as_deref().hash(h);
}

fn str_bytes(s: &Option<Arc<str>>) -> usize {
    // Strings are usually shared already (interned by the client or the dataset);
    // counting them per section overstates, which errs on the safe side.
    s.as_ref().map_or(0, |s| s.len() + 16)
}

impl ContentHash for AsnInfo {
    fn content_hash(&self) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        self.number.hash(&mut h);
        for s in [
            &self.name,
            &self.org,
            &self.country,
            &self.domain,
            &self.kind,
            &self.route,
            &self.rir,
        ] {
            hash_str(&mut h, s);
        }
        h.finish()
    }

    fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + 16
            + [
                &self.name,
                &self.org,
                &self.country,
                &self.domain,
                &self.kind,
                &self.route,
                &self.rir,
            ]
            .into_iter()
            .map(str_bytes)
            .sum::<usize>()
    }
}

impl ContentHash for GeoInfo {
    fn content_hash(&self) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        for s in [
            &self.country_code,
            &self.country_name,
            &self.region,
            &self.city,
            &self.timezone,
        ] {
            hash_str(&mut h, s);
        }
        self.latitude.map(f64::to_bits).hash(&mut h);
        self.longitude.map(f64::to_bits).hash(&mut h);
        h.finish()
    }

    fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + 16
            + [
                &self.country_code,
                &self.country_name,
                &self.region,
                &self.city,
                &self.timezone,
            ]
            .into_iter()
            .map(str_bytes)
            .sum::<usize>()
    }
}

impl ContentHash for ThreatInfo {
    fn content_hash(&self) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        self.score.hash(&mut h);
        hash_str(&mut h, &self.level);
        [
            self.is_tor,
            self.is_proxy,
            self.is_vpn,
            self.is_hosting,
            self.is_relay,
            self.known_bot,
        ]
        .hash(&mut h);
        for list in [&self.categories, &self.blacklists] {
            list.len().hash(&mut h);
            for s in list {
                s.hash(&mut h);
            }
        }
        h.finish()
    }

    fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + 16
            + str_bytes(&self.level)
            + self
                .categories
                .iter()
                .chain(&self.blacklists)
                .map(|s| s.len() + 32)
                .sum::<usize>()
    }
}

/// Distinct sections of one kind, by content hash (collisions compared in full).
struct Pool<T> {
    map: HashMap<u64, Vec<Arc<T>>>,
    len: usize,
    len_after_sweep: usize,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            map: HashMap::new(),
            len: 0,
            len_after_sweep: 0,
        }
    }
}

/// Below this many sections a pool is never swept.
const SWEEP_FLOOR: usize = 1024;

impl<T: ContentHash> Pool<T> {
    /// The shared copy of `value`; adds its size to `charged` when it is new.
    fn intern(&mut self, value: &T, charged: &mut usize) -> Arc<T> {
        let key = value.content_hash();
        let bucket = self.map.entry(key).or_default();
        if let Some(found) = bucket.iter().find(|a| ***a == *value) {
            return found.clone();
        }
        let shared = Arc::new(value.clone());
        bucket.push(shared.clone());
        self.len += 1;
        *charged += value.approx_bytes();
        if self.len > SWEEP_FLOOR.max(2 * self.len_after_sweep) {
            self.sweep();
        }
        shared
    }

    /// Drops sections no cache entry holds any more (only the pool's reference left).
    fn sweep(&mut self) {
        self.map.retain(|_, bucket| {
            bucket.retain(|a| Arc::strong_count(a) > 1);
            !bucket.is_empty()
        });
        self.len = self.map.values().map(Vec::len).sum();
        self.len_after_sweep = self.len;
    }
}

#[derive(Default)]
struct Interner {
    asn: Pool<AsnInfo>,
    geo: Pool<GeoInfo>,
    threat: Pool<ThreatInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(entries: usize) -> CacheSettings {
        CacheSettings {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(10),
            max_entries: NonZeroUsize::new(entries).unwrap(),
            max_bytes: NonZeroUsize::new(1 << 30).unwrap(),
            shards: NonZeroUsize::new(1).unwrap(),
        }
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0800_0000 + n))
    }

    fn found(asn: u32, org: &str, score: u8) -> Answer {
        Answer::Found(IntelRecord {
            asn: Some(AsnInfo {
                number: Some(asn),
                org: Some(org.into()),
                ..AsnInfo::default()
            }),
            geo: None,
            threat: Some(ThreatInfo {
                score: Some(score),
                is_tor: Some(false),
                ..ThreatInfo::default()
            }),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn positive_ttl_expires() {
        let metrics = CacheMetrics::unregistered();
        let cache = Cache::try_new(&settings(10), metrics.clone()).unwrap();
        let a = found(15169, "Google LLC", 10);
        cache.insert(ip(1), &a);
        assert_eq!(cache.get(ip(1)), Some(a.clone()));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(cache.get(ip(1)), Some(a));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cache.get(ip(1)), None);
        assert_eq!(metrics.expirations.get(), 1);
        assert_eq!(metrics.hits.get(), 2);
        assert_eq!(metrics.misses.get(), 1);
        assert_eq!(metrics.entries.get(), 0);
        assert!(cache.is_empty());
    }

    /// Regression (issue 8 item 6): a TTL from the config whose milliseconds do not
    /// fit `u64` was truncated (`as u64`: 2^64 ms + 384 ms became 384 ms), and one
    /// that fits overflowed the addition to the clock (a panic).
    #[tokio::test(start_paused = true)]
    async fn absurd_ttls_mean_forever() {
        tokio::time::advance(Duration::from_secs(1)).await;
        for ttl in [
            Duration::from_millis(u64::MAX),
            Duration::from_secs(18_446_744_073_709_552),
            Duration::MAX,
        ] {
            let mut s = settings(10);
            s.ttl = ttl;
            s.negative_ttl = ttl;
            let cache = Cache::try_new(&s, CacheMetrics::unregistered()).unwrap();
            cache.insert(ip(1), &found(1, "x", 1));
            cache.insert(ip(2), &Answer::NoData);
            tokio::time::advance(Duration::from_secs(3600)).await;
            assert!(cache.get(ip(1)).is_some(), "{ttl:?}");
            assert_eq!(cache.get(ip(2)), Some(Answer::NoData), "{ttl:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn negative_ttl_is_shorter() {
        let cache = Cache::try_new(&settings(10), CacheMetrics::unregistered()).unwrap();
        cache.insert(ip(1), &Answer::NoData);
        cache.insert(ip(2), &found(1, "x", 1));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(cache.get(ip(1)), Some(Answer::NoData));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cache.get(ip(1)), None);
        assert!(matches!(cache.get(ip(2)), Some(Answer::Found(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn entry_bound_evicts_least_recently_used() {
        let metrics = CacheMetrics::unregistered();
        let cache = Cache::try_new(&settings(3), metrics.clone()).unwrap();
        for n in 0..3 {
            cache.insert(ip(n), &found(n, "x", 1));
        }
        assert!(cache.get(ip(0)).is_some()); // 0 is now the most recent
        cache.insert(ip(3), &found(3, "x", 1));
        assert_eq!(cache.len(), 3);
        assert!(cache.get(ip(1)).is_none(), "least recently used is gone");
        assert!(cache.get(ip(0)).is_some());
        assert_eq!(metrics.evictions.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn byte_bound_evicts() {
        let mut s = settings(1000);
        s.max_bytes = NonZeroUsize::new(ENTRY_BYTES * 5).unwrap();
        let cache = Cache::try_new(&s, CacheMetrics::unregistered()).unwrap();
        for n in 0..20 {
            cache.insert(ip(n), &Answer::NoData);
        }
        assert_eq!(cache.len(), 5);
        assert!(cache.approx_bytes() <= ENTRY_BYTES * 5);
    }

    #[tokio::test(start_paused = true)]
    async fn sections_are_shared_across_addresses() {
        let cache = Cache::try_new(&settings(100_000), CacheMetrics::unregistered()).unwrap();
        for n in 0..5000 {
            // Fresh strings each time, as a client parsing JSON would make them.
            cache.insert(
                ip(n),
                &found(n % 7, &format!("org {}", n % 7), (n % 3) as u8),
            );
        }
        let (asn, geo, threat) = cache.interned();
        assert_eq!((asn, geo, threat), (7, 0, 3));
    }

    #[test]
    fn settings_are_checked() {
        let mut s = settings(1);
        s.negative_ttl = Duration::from_secs(61);
        assert!(matches!(
            s.validate(),
            Err(CacheError::NegativeTtlTooLong { .. })
        ));
        let mut s = settings(1);
        s.max_bytes = NonZeroUsize::new(10).unwrap();
        assert!(matches!(s.validate(), Err(CacheError::TooFewBytes { .. })));
    }
}
