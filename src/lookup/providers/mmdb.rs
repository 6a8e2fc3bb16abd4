//! Offline provider backed by a MaxMind DB file (GeoLite2/GeoIP2 ASN, Country, City, or
//! the demo database written by [`crate::simulate::mmdb_writer`]).
//!
//! Contract: a lookup never leaves the process, never fails and never blocks on IO: an
//! address the file does not cover, or a record that cannot be decoded, is
//! [`Answer::NoData`]. The file is read whole into memory (no mmap: the crate forbids
//! `unsafe`) and checked with the reader's full verifier before it is used, both at
//! [`MmdbProvider::open`] and on reload (less its two metadata checks that go beyond
//! the format, see `verify`). A reload swaps the database atomically; a
//! broken replacement is refused and the old database keeps answering. Strings are
//! interned per loaded database, so a cache of a million records shares the few
//! thousand distinct organisation and place names.
//!
//! Field mapping (MaxMind's documented record shapes):
//! - `autonomous_system_number` / `autonomous_system_organization` (GeoLite2-ASN,
//!   GeoIP2-ISP) -> [`AsnInfo::number`] / [`AsnInfo::org`]. These databases carry no
//!   short AS handle, so [`AsnInfo::name`] is set to the organisation name as well.
//! - In a record that has those ASN fields, `country.iso_code` is the AS country
//!   ([`AsnInfo::country`]), as in the demo database.
//! - `country.iso_code`, `country.names.en`, `subdivisions[0].names.en`,
//!   `city.names.en`, `location.latitude/longitude/time_zone` (GeoIP2/GeoLite2 Country
//!   and City) -> [`GeoInfo`]. `country.iso_code` alone becomes a geo fact only in a
//!   record without ASN fields.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime};

use maxminddb::{MaxMindDbError, Reader};
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use tracing::{debug, info, warn};

use super::{Answer, Provider, ProviderError, ProviderFuture};
use crate::lookup::record::{AsnInfo, GeoInfo, IntelRecord};
use crate::simulate::mmdb_writer::{encode_metadata, METADATA_MARKER};
use crate::telemetry::error_chain;

/// Addresses per [`Provider::lookup`] call. A lookup costs about a microsecond, so
/// this keeps one poll of the batch future near the ~500 µs budget (STYLE.md).
const MAX_BATCH: usize = 512;

/// Distinct strings interned per loaded database. GeoLite2-ASN has under 100 000
/// organisations and GeoLite2-City about as many place names; past the bound a
/// string is allocated per record instead of shared.
const MAX_INTERNED: usize = 1 << 17;

/// Why a database could not be opened or reloaded.
#[derive(Debug, thiserror::Error)]
pub enum MmdbError {
    /// The file could not be read or is not a valid MaxMind DB.
    #[error("cannot load mmdb file {}", path.display())]
    Load {
        path: PathBuf,
        #[source]
        source: MaxMindDbError,
    },
    /// The file's metadata (size, modification time) could not be read.
    #[error("cannot stat mmdb file {}", path.display())]
    Stat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What identifies one version of the file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    fn of(path: &Path) -> Result<FileStamp, MmdbError> {
        let meta = std::fs::metadata(path).map_err(|source| MmdbError::Stat {
            path: path.to_owned(),
            source,
        })?;
        Ok(FileStamp {
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

/// One loaded version of the database with its string interner.
struct Loaded {
    reader: Reader<Vec<u8>>,
    strings: RwLock<HashMap<Box<str>, Arc<str>>>,
}

impl Loaded {
    fn read(path: &Path) -> Result<Loaded, MmdbError> {
        let load_err = |source| MmdbError::Load {
            path: path.to_owned(),
            source,
        };
        let mut bytes = std::fs::read(path).map_err(|e| load_err(MaxMindDbError::Io(e)))?;
        verify(&mut bytes).map_err(load_err)?;
        let reader = Reader::from_source(bytes).map_err(load_err)?;
        Ok(Loaded {
            reader,
            strings: RwLock::new(HashMap::new()),
        })
    }

    /// The shared copy of `s`; allocates only the first time a string is seen.
    fn intern(&self, s: &str) -> Arc<str> {
        let read = self.strings.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = read.get(s) {
            return Arc::clone(shared);
        }
        let full = read.len() >= MAX_INTERNED;
        drop(read);
        if full {
            return Arc::from(s);
        }
        let mut write = self.strings.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(write.entry(Box::from(s)).or_insert_with(|| Arc::from(s)))
    }

    fn lookup(&self, ip: IpAddr) -> Answer {
        let raw = match self
            .reader
            .lookup(ip)
            .and_then(|found| found.decode::<RawRecord<'_>>())
        {
            Ok(Some(raw)) => raw,
            Ok(None) => return Answer::NoData,
            Err(error) => {
                // Per event, hence debug: the file passed the verifier at load, so
                // this is a record of a shape we do not understand.
                debug!(%error, "mmdb record not decoded");
                return Answer::NoData;
            }
        };
        let record = self.convert(&raw);
        if record.is_empty() {
            Answer::NoData
        } else {
            Answer::Found(record)
        }
    }

    fn convert(&self, raw: &RawRecord<'_>) -> IntelRecord {
        let iso_code = raw.country.as_ref().and_then(|c| c.iso_code);
        let has_asn =
            raw.autonomous_system_number.is_some() || raw.autonomous_system_organization.is_some();
        let asn = has_asn.then(|| {
            let org = raw.autonomous_system_organization.map(|o| self.intern(o));
            AsnInfo {
                number: raw.autonomous_system_number,
                name: org.clone(),
                org,
                country: iso_code.map(|c| self.intern(c)),
                ..AsnInfo::default()
            }
        });

        let country_name = raw.country.as_ref().and_then(|c| c.names.en);
        let location = raw.location.as_ref();
        let geo = GeoInfo {
            country_code: if has_asn && country_name.is_none() {
                None
            } else {
                iso_code.map(|c| self.intern(c))
            },
            country_name: country_name.map(|n| self.intern(n)),
            region: raw.subdivision.map(|n| self.intern(n)),
            city: raw
                .city
                .as_ref()
                .and_then(|c| c.names.en)
                .map(|n| self.intern(n)),
            latitude: location.and_then(|l| l.latitude),
            longitude: location.and_then(|l| l.longitude),
            timezone: location.and_then(|l| l.time_zone).map(|t| self.intern(t)),
        };
        let geo = (geo != GeoInfo::default()).then_some(geo);
        IntelRecord {
            asn,
            geo,
            threat: None,
        }
    }
}

/// Runs the reader's full verifier over a database file.
///
/// The verifier is stricter than the format, as its documentation says: it refuses an
/// empty `description` map and an empty `database_type`, which the specification
/// allows, MaxMind's readers accept and Python's `mmdb-writer` writes (an empty
/// description by default). For such a file the verifier runs on the same bytes with
/// a placeholder in those two metadata fields: the metadata section is the end of the
/// file, so the search tree and data section it checks are the file's own, unchanged.
/// The file's own metadata is then restored, whatever the outcome.
fn verify(bytes: &mut Vec<u8>) -> Result<(), MaxMindDbError> {
    let reader = Reader::from_source(bytes.as_slice())?;
    let mut metadata = reader.metadata().clone();
    if !metadata.description.is_empty() && !metadata.database_type.is_empty() {
        return reader.verify();
    }
    drop(reader);
    if metadata.description.is_empty() {
        metadata
            .description
            .insert("en".to_owned(), "(no description)".to_owned());
    }
    if metadata.database_type.is_empty() {
        metadata.database_type = "(no type)".to_owned();
    }
    let placeholder = encode_metadata(&metadata).map_err(|e| {
        MaxMindDbError::invalid_database(format!("metadata cannot be checked: {e}"))
    })?;
    // The reader found its metadata after the last marker; so do we.
    let start = memchr::memmem::rfind(bytes, METADATA_MARKER)
        .map(|at| at + METADATA_MARKER.len())
        .ok_or_else(|| MaxMindDbError::invalid_database("no metadata marker"))?;
    let original = bytes.split_off(start);
    bytes.extend_from_slice(&placeholder);
    let verified = Reader::from_source(bytes.as_slice()).and_then(|reader| reader.verify());
    bytes.truncate(start);
    bytes.extend_from_slice(&original);
    verified
}

/// The union of the fields we read from ASN, Country and City records; every string
/// borrows from the database buffer, so decoding allocates nothing.
#[derive(Deserialize)]
struct RawRecord<'a> {
    autonomous_system_number: Option<u32>,
    #[serde(borrow)]
    autonomous_system_organization: Option<&'a str>,
    #[serde(borrow)]
    country: Option<RawCountry<'a>>,
    #[serde(borrow)]
    city: Option<RawNamed<'a>>,
    #[serde(borrow)]
    location: Option<RawLocation<'a>>,
    #[serde(
        borrow,
        default,
        rename = "subdivisions",
        deserialize_with = "first_subdivision_name"
    )]
    subdivision: Option<&'a str>,
}

#[derive(Deserialize)]
struct RawCountry<'a> {
    iso_code: Option<&'a str>,
    #[serde(borrow, default)]
    names: RawNames<'a>,
}

#[derive(Deserialize)]
struct RawNamed<'a> {
    #[serde(borrow, default)]
    names: RawNames<'a>,
}

#[derive(Deserialize, Default)]
struct RawNames<'a> {
    en: Option<&'a str>,
}

#[derive(Deserialize)]
struct RawLocation<'a> {
    latitude: Option<f64>,
    longitude: Option<f64>,
    time_zone: Option<&'a str>,
}

/// Reads `subdivisions[0].names.en` and skips the rest of the array without
/// collecting it into a `Vec`.
fn first_subdivision_name<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'de str>, D::Error> {
    struct First;
    impl<'de> Visitor<'de> for First {
        type Value = Option<&'de str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of subdivisions")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let first = seq
                .next_element::<RawNamed<'de>>()?
                .and_then(|s| s.names.en);
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(first)
        }
    }
    deserializer.deserialize_seq(First)
}

/// The MaxMind DB provider. Cheap to share behind an `Arc`.
pub struct MmdbProvider {
    name: String,
    path: PathBuf,
    current: RwLock<Arc<Loaded>>,
    /// The last file version we tried to load, good or bad: a broken file is
    /// reported once, not on every reload tick.
    seen: RwLock<FileStamp>,
}

impl fmt::Debug for MmdbProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmdbProvider")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl MmdbProvider {
    /// Loads and verifies the database at `path`; the provider is named `mmdb`.
    pub fn open(path: &Path) -> Result<Self, MmdbError> {
        Self::open_named("mmdb", path)
    }

    /// Like [`MmdbProvider::open`], under a configured name (for several databases).
    pub fn open_named(name: &str, path: &Path) -> Result<Self, MmdbError> {
        let stamp = FileStamp::of(path)?;
        let loaded = Loaded::read(path)?;
        Ok(MmdbProvider {
            name: name.to_owned(),
            path: path.to_owned(),
            current: RwLock::new(Arc::new(loaded)),
            seen: RwLock::new(stamp),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `database_type` of the loaded database, e.g. `GeoLite2-ASN`.
    pub fn database_type(&self) -> String {
        self.loaded().reader.metadata().database_type.clone()
    }

    fn loaded(&self) -> Arc<Loaded> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Looks one address up. Allocates only the record itself (names are shared).
    pub fn lookup_sync(&self, ip: IpAddr) -> Answer {
        self.loaded().lookup(ip)
    }

    /// Loads the file again when its length or modification time changed since the
    /// last attempt, and swaps it in. `Ok(true)`: a new database answers from now on;
    /// `Ok(false)`: the file is unchanged (or is the broken version already reported);
    /// `Err`: the new file is unusable and the old database keeps answering.
    ///
    /// Blocking (reads and verifies the whole file): call it from a blocking context.
    /// Replace the file by writing a sibling and renaming it over the old one, so
    /// that a reload never reads a half-written file.
    pub fn reload_if_changed(&self) -> Result<bool, MmdbError> {
        let stamp = FileStamp::of(&self.path)?;
        if *self.seen.read().unwrap_or_else(PoisonError::into_inner) == stamp {
            return Ok(false);
        }
        *self.seen.write().unwrap_or_else(PoisonError::into_inner) = stamp;
        let loaded = Loaded::read(&self.path)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
        Ok(true)
    }

    /// Checks the file every `every` (the first check after one period) and reloads
    /// it when it changed. A broken new file is logged and the old database kept.
    /// The task ends when the provider is dropped.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let provider: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            // `every` comes from the config; tokio's interval adds it to an instant
            // unchecked, so a year stands in for anything longer.
            let every = every.min(Duration::from_secs(365 * 24 * 3600));
            let mut ticks = tokio::time::interval_at(crate::lookup::time::from_now(every), every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(this) = provider.upgrade() else {
                    return;
                };
                let name = this.name.clone();
                let outcome = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
                match outcome {
                    Ok(Ok(true)) => info!(provider = %name, "mmdb reloaded"),
                    Ok(Ok(false)) => {}
                    Ok(Err(error)) => warn!(
                        error = %error_chain(&error),
                        provider = %name,
                        "mmdb reload failed, keeping the loaded database"
                    ),
                    Err(error) => warn!(%error, provider = %name, "mmdb reload task failed"),
                }
            }
        })
    }
}

impl Provider for MmdbProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    fn lookup<'a>(
        &'a self,
        ips: &'a [IpAddr],
    ) -> ProviderFuture<'a, Result<Vec<Answer>, ProviderError>> {
        Box::pin(async move {
            let loaded = self.loaded();
            Ok(ips.iter().map(|&ip| loaded.lookup(ip)).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::time::UNIX_EPOCH;

    use ipnet::IpNet;

    use super::*;
    use crate::simulate::mmdb_writer::{asn_db_from_csv, MmdbValue, MmdbWriter};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn s(v: &str) -> MmdbValue {
        MmdbValue::string(v)
    }

    /// Writes `writer` to `path` and gives the file a distinct modification time
    /// (`version` seconds after the epoch), because two writes within one clock tick
    /// of the file system can share an mtime.
    fn write(writer: &MmdbWriter, path: &Path, version: u64) {
        writer.write_to(path).unwrap();
        set_version(path, version);
    }

    fn set_version(path: &Path, version: u64) {
        let file = File::options().write(true).open(path).unwrap();
        file.set_modified(UNIX_EPOCH + Duration::from_secs(1_000_000 + version))
            .unwrap();
    }

    fn asn_db(org_of_8_8_8: &str) -> MmdbWriter {
        let csv = format!(
            "network,asn,organization,country\n\
             8.8.8.0/24,15169,{org_of_8_8_8},US\n\
             8.8.4.0/24,15169,{org_of_8_8_8},US\n\
             1.1.1.0/24,13335,\"Cloudflare, Inc.\",\n\
             2a01:4f8::/32,24940,Hetzner Online GmbH,DE\n"
        );
        asn_db_from_csv(&csv).unwrap()
    }

    fn city_db() -> MmdbWriter {
        let mut w = MmdbWriter::new("GeoLite2-City");
        let berlin = MmdbValue::map([
            (
                "city",
                MmdbValue::map([(
                    "names",
                    MmdbValue::map([("de", s("Berlin")), ("en", s("Berlin"))]),
                )]),
            ),
            (
                "country",
                MmdbValue::map([
                    ("geoname_id", MmdbValue::U32(2_921_044)),
                    ("iso_code", s("DE")),
                    (
                        "names",
                        MmdbValue::map([("de", s("Deutschland")), ("en", s("Germany"))]),
                    ),
                ]),
            ),
            (
                "location",
                MmdbValue::map([
                    ("accuracy_radius", MmdbValue::U16(20)),
                    ("latitude", MmdbValue::Double(52.5244)),
                    ("longitude", MmdbValue::Double(13.4105)),
                    ("time_zone", s("Europe/Berlin")),
                ]),
            ),
            (
                "subdivisions",
                MmdbValue::Array(vec![
                    MmdbValue::map([
                        ("iso_code", s("BE")),
                        ("names", MmdbValue::map([("en", s("Land Berlin"))])),
                    ]),
                    MmdbValue::map([("names", MmdbValue::map([("en", s("Second"))]))]),
                ]),
            ),
        ]);
        w.insert(net("2.160.0.0/12"), berlin).unwrap();
        let country_only = MmdbValue::map([("country", MmdbValue::map([("iso_code", s("FR"))]))]);
        w.insert(net("2.0.0.0/12"), country_only).unwrap();
        w.insert(
            net("2001:db8::/32"),
            MmdbValue::map([("unrelated", MmdbValue::U16(1))]),
        )
        .unwrap();
        w
    }

    fn found(answer: Answer) -> IntelRecord {
        match answer {
            Answer::Found(record) => record,
            Answer::NoData => panic!("expected a record, got no data"),
        }
    }

    fn org(p: &MmdbProvider, addr: &str) -> Option<Arc<str>> {
        found(p.lookup_sync(ip(addr))).asn.unwrap().org
    }

    #[test]
    fn asn_records_map_to_asn_info() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("asn.mmdb");
        write(&asn_db("Google LLC"), &path, 1);
        let p = MmdbProvider::open(&path).unwrap();
        assert_eq!(p.name(), "mmdb");
        assert_eq!(p.database_type(), "ipenrich-ASN");

        let google = found(p.lookup_sync(ip("8.8.8.8")));
        let google_llc: Arc<str> = Arc::from("Google LLC");
        assert_eq!(
            google,
            IntelRecord {
                asn: Some(AsnInfo {
                    number: Some(15169),
                    name: Some(google_llc.clone()),
                    org: Some(google_llc),
                    country: Some(Arc::from("US")),
                    ..AsnInfo::default()
                }),
                geo: None,
                threat: None,
            }
        );
        let cloudflare = found(p.lookup_sync(ip("::ffff:1.1.1.1"))).asn.unwrap();
        assert_eq!(cloudflare.number, Some(13335));
        assert_eq!(cloudflare.org.as_deref(), Some("Cloudflare, Inc."));
        assert_eq!(cloudflare.country, None);
        assert_eq!(
            org(&p, "2a01:4f8:1:2::3").as_deref(),
            Some("Hetzner Online GmbH")
        );
    }

    #[test]
    fn unknown_addresses_are_no_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("asn.mmdb");
        write(&asn_db("Google LLC"), &path, 1);
        let p = MmdbProvider::open(&path).unwrap();
        for addr in ["8.8.9.9", "10.0.0.1", "::1", "2a01:4f9::1"] {
            assert_eq!(p.lookup_sync(ip(addr)), Answer::NoData, "{addr}");
        }
    }

    #[test]
    fn city_records_map_to_geo_info() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("city.mmdb");
        write(&city_db(), &path, 1);
        let p = MmdbProvider::open_named("geolite-city", &path).unwrap();
        assert_eq!(p.name(), "geolite-city");

        let berlin = found(p.lookup_sync(ip("2.161.0.1")));
        assert_eq!(berlin.asn, None);
        assert_eq!(
            berlin.geo.unwrap(),
            GeoInfo {
                country_code: Some(Arc::from("DE")),
                country_name: Some(Arc::from("Germany")),
                region: Some(Arc::from("Land Berlin")),
                city: Some(Arc::from("Berlin")),
                latitude: Some(52.5244),
                longitude: Some(13.4105),
                timezone: Some(Arc::from("Europe/Berlin")),
            }
        );
        let france = found(p.lookup_sync(ip("2.1.2.3"))).geo.unwrap();
        assert_eq!(france.country_code.as_deref(), Some("FR"));
        assert_eq!(france.city, None);
        // A record with none of the fields we read says nothing.
        assert_eq!(p.lookup_sync(ip("2001:db8::1")), Answer::NoData);
    }

    #[test]
    fn names_are_shared_between_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("asn.mmdb");
        // Two networks with equal records are stored once; make them differ.
        let mut w = MmdbWriter::new("GeoLite2-ASN");
        for (n, number) in [("10.0.0.0/8", 1_u32), ("11.0.0.0/8", 2)] {
            let value = MmdbValue::map([
                ("autonomous_system_number", MmdbValue::U32(number)),
                ("autonomous_system_organization", s("Shared Org")),
            ]);
            w.insert(net(n), value).unwrap();
        }
        write(&w, &path, 1);
        let p = MmdbProvider::open(&path).unwrap();
        let a = org(&p, "10.1.1.1").unwrap();
        let b = org(&p, "11.1.1.1").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let again = found(p.lookup_sync(ip("10.2.2.2"))).asn.unwrap();
        assert!(Arc::ptr_eq(&a, again.name.as_ref().unwrap()));
    }

    #[test]
    fn reload_swaps_in_a_changed_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("asn.mmdb");
        write(&asn_db("Google LLC"), &path, 1);
        let p = MmdbProvider::open(&path).unwrap();
        assert!(!p.reload_if_changed().unwrap());

        write(&asn_db("Google Renamed"), &path, 2);
        assert!(p.reload_if_changed().unwrap());
        assert_eq!(org(&p, "8.8.8.8").as_deref(), Some("Google Renamed"));
        assert!(!p.reload_if_changed().unwrap());
    }

    #[test]
    fn a_broken_replacement_keeps_the_old_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("asn.mmdb");
        write(&asn_db("Google LLC"), &path, 1);
        let p = MmdbProvider::open(&path).unwrap();

        // Truncated: the metadata marker is gone.
        let good = asn_db("Google Renamed").to_bytes().unwrap();
        std::fs::write(&path, &good[..good.len() / 2]).unwrap();
        set_version(&path, 2);
        let err = p.reload_if_changed().unwrap_err();
        assert!(err.to_string().contains("asn.mmdb"), "{err}");
        assert_eq!(org(&p, "8.8.8.8").as_deref(), Some("Google LLC"));
        // Reported once; the same broken file is not retried.
        assert!(!p.reload_if_changed().unwrap());

        // Intact metadata but a corrupted search tree: only the verifier sees it.
        let mut corrupt = good.clone();
        corrupt[..60].fill(0xff);
        std::fs::write(&path, &corrupt).unwrap();
        set_version(&path, 3);
        assert!(matches!(p.reload_if_changed(), Err(MmdbError::Load { .. })));
        assert_eq!(org(&p, "8.8.8.8").as_deref(), Some("Google LLC"));

        write(&asn_db("Google Renamed"), &path, 4);
        assert!(p.reload_if_changed().unwrap());
        assert_eq!(org(&p, "8.8.8.8").as_deref(), Some("Google Renamed"));
    }

    /// Issue 8 item 12: a file whose metadata `description` is an empty map (as
    /// Python's `mmdb-writer` writes) was refused: the verifier of maxminddb 0.32
    /// demands a non-empty map, which the format does not.
    #[test]
    fn empty_description_and_database_type_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.mmdb");
        let mut w = asn_db("Google LLC");
        w.clear_description();
        write(&w, &path, 1);
        let p = MmdbProvider::open(&path).unwrap();
        assert_eq!(org(&p, "8.8.8.8").as_deref(), Some("Google LLC"));
        // The file's own metadata is kept, not the placeholder used for verifying.
        assert!(p.loaded().reader.metadata().description.is_empty());

        let mut untyped = MmdbWriter::new("");
        untyped.clear_description();
        untyped
            .insert(
                net("10.0.0.0/8"),
                MmdbValue::map([("autonomous_system_number", MmdbValue::U32(64512))]),
            )
            .unwrap();
        write(&untyped, &path, 2);
        assert!(p.reload_if_changed().unwrap());
        assert_eq!(p.database_type(), "");
        let private = found(p.lookup_sync(ip("10.1.2.3"))).asn.unwrap();
        assert_eq!(private.number, Some(64512));
    }

    /// The placeholder metadata only lifts the two metadata checks: a corrupt search
    /// tree behind an empty description is still refused.
    #[test]
    fn empty_description_does_not_skip_the_verifier() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corrupt.mmdb");
        let mut w = asn_db("Google LLC");
        w.clear_description();
        let mut corrupt = w.to_bytes().unwrap();
        corrupt[..60].fill(0xff);
        std::fs::write(&path, &corrupt).unwrap();
        let err = MmdbProvider::open(&path).unwrap_err();
        assert!(matches!(err, MmdbError::Load { .. }), "{err:?}");
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such.mmdb");
        let err = MmdbProvider::open(&missing).unwrap_err();
        assert!(matches!(err, MmdbError::Stat { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&*missing.to_string_lossy()),
            "{err}"
        );

        let junk = dir.path().join("junk.mmdb");
        std::fs::write(&junk, b"not a database").unwrap();
        let err = MmdbProvider::open(&junk).unwrap_err();
        assert!(matches!(err, MmdbError::Load { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("cannot load mmdb file {}", junk.display())
        );
    }

    #[tokio::test]
    async fn provider_lookup_answers_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("asn.mmdb");
        write(&asn_db("Google LLC"), &path, 1);
        let p = MmdbProvider::open(&path).unwrap();
        assert!(p.max_batch() > 1);
        let ips = [ip("10.0.0.1"), ip("1.1.1.1"), ip("8.8.4.4")];
        let answers = p.lookup(&ips).await.unwrap();
        assert_eq!(answers.len(), 3);
        assert_eq!(answers[0], Answer::NoData);
        assert_eq!(found(answers[1].clone()).asn.unwrap().number, Some(13335));
        assert_eq!(found(answers[2].clone()).asn.unwrap().number, Some(15169));
    }

    #[test]
    fn the_demo_database_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/demo-asn.mmdb");
        let p = MmdbProvider::open(&path).unwrap();
        let tor = found(p.lookup_sync(ip("185.220.101.1"))).asn.unwrap();
        assert_eq!(tor.number, Some(60729));
        assert_eq!(tor.country.as_deref(), Some("DE"));
    }

    // Paused time on the current-thread runtime: time does not auto-advance while
    // the reload runs on the blocking pool, so each sleep below returns only after
    // the tick it waits past has been fully handled.
    #[tokio::test(start_paused = true)]
    async fn reloader_picks_up_new_files_and_survives_broken_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("asn.mmdb");
        write(&asn_db("Google LLC"), &path, 1);
        let p = Arc::new(MmdbProvider::open(&path).unwrap());
        let every = Duration::from_secs(60);
        let task = p.spawn_reloader(every);

        write(&asn_db("Google Renamed"), &path, 2);
        tokio::time::sleep(every / 2).await;
        assert_eq!(org(&p, "8.8.8.8").as_deref(), Some("Google LLC"));
        tokio::time::sleep(every).await;
        assert_eq!(org(&p, "8.8.8.8").as_deref(), Some("Google Renamed"));

        std::fs::write(&path, b"broken").unwrap();
        set_version(&path, 3);
        tokio::time::sleep(every).await;
        assert_eq!(org(&p, "8.8.8.8").as_deref(), Some("Google Renamed"));
        assert!(!task.is_finished());

        write(&asn_db("Google Third"), &path, 4);
        tokio::time::sleep(every).await;
        assert_eq!(org(&p, "8.8.8.8").as_deref(), Some("Google Third"));

        drop(p);
        tokio::time::timeout(every * 2, task)
            .await
            .unwrap()
            .unwrap();
    }
}
