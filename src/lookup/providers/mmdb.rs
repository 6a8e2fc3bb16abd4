//! Offline provider backed by a MaxMind DB file (GeoLite2/GeoIP2 ASN, Country, City, or
//! the demo database written by [`crate::mmdb::writer`]): a thin adapter from
//! [`crate::mmdb::DatabaseFile`] to [`Provider`].
//!
//! Contract: a lookup never leaves the process, never fails and never blocks on IO: an
//! address the file does not cover, or a record that cannot be decoded, is
//! [`Answer::NoData`]. Loading, verifying, field mapping and reloading are the
//! [`crate::mmdb`] room's; this file adds the name, the batch size and the answers.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Answer, Provider, ProviderError, ProviderFuture};
use crate::mmdb::{Database, DatabaseFile};

pub use crate::mmdb::MmdbError;

/// Addresses per [`Provider::lookup`] call. A lookup costs about a microsecond, so
/// this keeps one poll of the batch future near the ~500 µs budget (STYLE.md).
const MAX_BATCH: usize = 512;

/// The MaxMind DB provider. Cheap to share behind an `Arc`.
pub struct MmdbProvider {
    name: String,
    file: Arc<DatabaseFile>,
}

impl fmt::Debug for MmdbProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmdbProvider")
            .field("name", &self.name)
            .field("path", &self.file.path())
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
        Ok(MmdbProvider {
            name: name.to_owned(),
            file: Arc::new(DatabaseFile::open(path)?),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The `database_type` of the loaded database, e.g. `GeoLite2-ASN`.
    pub fn database_type(&self) -> String {
        self.loaded().metadata().database_type.clone()
    }

    fn loaded(&self) -> Arc<Database> {
        self.file.current()
    }

    /// Looks one address up. Allocates only the record itself (names are shared).
    pub fn lookup_sync(&self, ip: IpAddr) -> Answer {
        answer(&self.loaded(), ip)
    }

    /// See [`DatabaseFile::reload_if_changed`]. Blocking.
    pub fn reload_if_changed(&self) -> Result<bool, MmdbError> {
        self.file.reload_if_changed()
    }

    /// Checks the file every `every` (the first check after one period) and reloads
    /// it when it changed. A broken new file is logged and the old database kept.
    /// The task ends when the provider is dropped.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        self.file.spawn_reloader(&self.name, every)
    }
}

fn answer(db: &Database, ip: IpAddr) -> Answer {
    match db.lookup(ip) {
        Some(record) => Answer::Found(record),
        None => Answer::NoData,
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
            Ok(ips.iter().map(|&ip| answer(&loaded, ip)).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::time::UNIX_EPOCH;

    use ipnet::IpNet;

    use super::*;
    use crate::lookup::record::{AsnInfo, GeoInfo, IntelRecord};
    use crate::mmdb::writer::{asn_db_from_csv, MmdbValue, MmdbWriter};

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
        assert!(p.loaded().metadata().description.is_empty());

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
