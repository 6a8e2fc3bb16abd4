//! Reading MaxMind DB files: load, verify, decode into the normalised record, reload.
//!
//! Contract: a file is read whole into memory (no mmap: the crate forbids `unsafe`) and
//! checked with the reader's full verifier before it is used, both at
//! [`DatabaseFile::open`] and on reload (less its two metadata checks that go beyond
//! the format, see `verify`). A reload swaps the database atomically; a broken
//! replacement is refused and the old database keeps answering. A lookup never fails
//! and never does IO: an address the file does not cover, or a record that cannot be
//! decoded, is `None`. Strings are interned per loaded database, so a cache of a
//! million records shares the few thousand distinct organisation and place names.
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

use maxminddb::{MaxMindDbError, Metadata, Reader};
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use tracing::{debug, info, warn};

use super::writer::{encode_metadata, METADATA_MARKER};
use crate::lookup::record::{AsnInfo, GeoInfo, IntelRecord};
use crate::telemetry::error_chain;

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

/// One loaded version of a database file, with its string interner.
pub struct Database {
    reader: Reader<Vec<u8>>,
    strings: RwLock<HashMap<Box<str>, Arc<str>>>,
}

impl Database {
    /// Reads the whole file and runs the verifier over it.
    pub fn read(path: &Path) -> Result<Database, MmdbError> {
        let load_err = |source| MmdbError::Load {
            path: path.to_owned(),
            source,
        };
        let mut bytes = std::fs::read(path).map_err(|e| load_err(MaxMindDbError::Io(e)))?;
        verify(&mut bytes).map_err(load_err)?;
        let reader = Reader::from_source(bytes).map_err(load_err)?;
        Ok(Database {
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

    /// The file's metadata, as written (not the placeholder used for verifying).
    pub fn metadata(&self) -> &Metadata {
        self.reader.metadata()
    }

    /// What the database says about `ip`; `None` when it does not cover the address,
    /// the record cannot be decoded or carries none of the fields we read. Allocates
    /// only the record itself (names are shared).
    pub fn lookup(&self, ip: IpAddr) -> Option<IntelRecord> {
        let raw = match self
            .reader
            .lookup(ip)
            .and_then(|found| found.decode::<RawRecord<'_>>())
        {
            Ok(Some(raw)) => raw,
            Ok(None) => return None,
            Err(error) => {
                // Per event, hence debug: the file passed the verifier at load, so
                // this is a record of a shape we do not understand.
                debug!(%error, "mmdb record not decoded");
                return None;
            }
        };
        let record = self.convert(&raw);
        (!record.is_empty()).then_some(record)
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

/// A database file on disk and the version of it loaded last. Cheap to share behind
/// an `Arc`.
pub struct DatabaseFile {
    path: PathBuf,
    current: RwLock<Arc<Database>>,
    /// The last file version we tried to load, good or bad: a broken file is
    /// reported once, not on every reload tick.
    seen: RwLock<FileStamp>,
}

impl fmt::Debug for DatabaseFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl DatabaseFile {
    /// Loads and verifies the database at `path`.
    pub fn open(path: &Path) -> Result<Self, MmdbError> {
        let stamp = FileStamp::of(path)?;
        let loaded = Database::read(path)?;
        Ok(DatabaseFile {
            path: path.to_owned(),
            current: RwLock::new(Arc::new(loaded)),
            seen: RwLock::new(stamp),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database that answers now.
    pub fn current(&self) -> Arc<Database> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
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
        let loaded = Database::read(&self.path)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
        Ok(true)
    }

    /// Checks the file every `every` (the first check after one period) and reloads
    /// it when it changed. A broken new file is logged, under the provider name
    /// `name`, and the old database kept. The task ends when the file is dropped.
    pub fn spawn_reloader(
        self: &Arc<Self>,
        name: &str,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let file: Weak<Self> = Arc::downgrade(self);
        let name = name.to_owned();
        tokio::spawn(async move {
            // `every` comes from the config; tokio's interval adds it to an instant
            // unchecked, so a year stands in for anything longer.
            let every = every.min(Duration::from_secs(365 * 24 * 3600));
            let mut ticks = tokio::time::interval_at(crate::lookup::time::from_now(every), every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(this) = file.upgrade() else {
                    return;
                };
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
