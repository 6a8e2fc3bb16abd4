//! Replacing a database file safely, for [`super::fetch`]: the new file is written
//! beside the old one, verified, synced and renamed over it.
//!
//! Contract: the file at `out` is only ever a whole database the reader accepted, or
//! what was there before. A new file is checked with the reader's full verifier and
//! must answer its metadata; it is synced, made `rw-r--r--` (temporary files are
//! private, and the container that reads the database may run as another user),
//! renamed over `out` (atomic on one file system, hence the temporary files in the
//! same directory) and the directory is synced so the rename survives a crash. The
//! ETag of the installed file is then written to `<out>.etag` the same way, or
//! removed when the server sent none: a crash between the two leaves the old ETag,
//! which costs one unconditional download, never a stale database kept as current.
//! Temporary files are named `.<file name>.XXXXXX.part`; those of a killed process
//! are removed by [`Target::remove_leftovers`].

use std::io::Write as _;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;
use tracing::warn;

use super::fetch::FetchError;
use super::reader::{Database, MmdbError};

/// A database as the reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseInfo {
    /// `database_type` of its metadata (`GeoLite2-ASN`).
    pub database_type: String,
    /// `build_epoch` of its metadata, seconds since 1970.
    pub build_epoch: u64,
    /// File size.
    pub bytes: u64,
}

/// The file a fetch replaces, and the names beside it.
#[derive(Debug, Clone)]
pub struct Target {
    out: PathBuf,
    dir: PathBuf,
    /// Prefix of the temporary files beside `out`: `.<file name>.`.
    part_prefix: String,
    etag_path: PathBuf,
}

impl Target {
    /// The target `out`; `None` when the path names no file (`/`, `..`).
    pub fn new(out: &Path) -> Option<Target> {
        let name = out.file_name()?.to_string_lossy().into_owned();
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let mut etag_path = out.as_os_str().to_owned();
        etag_path.push(".etag");
        Some(Target {
            out: out.to_owned(),
            dir,
            part_prefix: format!(".{name}."),
            etag_path: etag_path.into(),
        })
    }

    /// The database file.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// A temporary file beside `out`, deleted when dropped.
    pub fn temp_file(&self) -> Result<NamedTempFile, FetchError> {
        tempfile::Builder::new()
            .prefix(&self.part_prefix)
            .suffix(".part")
            .tempfile_in(&self.dir)
            .map_err(|source| FetchError::File {
                what: "cannot create a temporary file in",
                path: self.dir.clone(),
                source,
            })
    }

    /// Deletes the temporary files a killed fetch of the same `out` left behind.
    pub fn remove_leftovers(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&self.part_prefix) && name.ends_with(".part") {
                if let Err(error) = std::fs::remove_file(entry.path()) {
                    warn!(%error, file = %entry.path().display(), "cannot remove a leftover download");
                }
            }
        }
    }

    /// The ETag stored beside the database, if it is one.
    pub fn stored_etag(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.etag_path).ok()?;
        plain_etag(text.trim())
    }

    /// Verifies `database` and puts it in place of `out`, then stores `etag`.
    pub fn install(
        &self,
        database: NamedTempFile,
        etag: Option<&str>,
    ) -> Result<DatabaseInfo, FetchError> {
        let info = inspect(database.path()).map_err(FetchError::Invalid)?;
        let file_err = |what, path: &Path| {
            let path = path.to_owned();
            move |source| FetchError::File { what, path, source }
        };
        database
            .as_file()
            .sync_all()
            .and_then(|()| make_readable(database.as_file()))
            .map_err(file_err("cannot sync", database.path()))?;
        database
            .persist(&self.out)
            .map_err(|e| e.error)
            .map_err(file_err("cannot replace", &self.out))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(file_err("cannot sync directory", &self.dir))?;
        self.store_etag(etag)?;
        Ok(info)
    }

    /// Writes `<out>.etag` (atomically), or removes it when there is none.
    fn store_etag(&self, etag: Option<&str>) -> Result<(), FetchError> {
        let err = |source| FetchError::File {
            what: "cannot write",
            path: self.etag_path.clone(),
            source,
        };
        match etag {
            Some(etag) => {
                let mut part = self.temp_file()?;
                writeln!(part, "{etag}")
                    .and_then(|()| part.as_file().sync_all())
                    .and_then(|()| make_readable(part.as_file()))
                    .map_err(err)?;
                part.persist(&self.etag_path).map_err(|e| err(e.error))?;
            }
            None => match std::fs::remove_file(&self.etag_path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
                _ => {}
            },
        }
        Ok(())
    }
}

/// Opens and verifies the database at `path` and reads its metadata.
pub fn inspect(path: &Path) -> Result<DatabaseInfo, MmdbError> {
    let database = Database::read(path)?;
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let metadata = database.metadata();
    Ok(DatabaseInfo {
        database_type: metadata.database_type.clone(),
        build_epoch: metadata.build_epoch,
        bytes,
    })
}

/// `etag` when it is visible ASCII of sane length: it goes back into a header.
pub fn plain_etag(etag: &str) -> Option<String> {
    let ok = !etag.is_empty()
        && etag.len() <= 256
        && etag.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    ok.then(|| etag.to_owned())
}

/// Makes `file` `rw-r--r--`.
fn make_readable(file: &std::fs::File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
    }
    #[cfg(not(unix))]
    {
        // Elsewhere temporary files are not private to begin with.
        let _ = file;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/samples/demo-asn.mmdb"
        ))
        .unwrap()
    }

    fn part(target: &Target, bytes: &[u8]) -> NamedTempFile {
        let mut part = target.temp_file().unwrap();
        part.write_all(bytes).unwrap();
        part
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_valid_database_replaces_the_file_and_its_etag() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("asn.mmdb");
        std::fs::write(&out, b"old").unwrap();
        let target = Target::new(&out).unwrap();
        let info = target
            .install(part(&target, &demo()), Some("\"v1\""))
            .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), demo());
        assert_eq!(info.bytes, demo().len() as u64);
        assert!(!info.database_type.is_empty());
        assert_eq!(target.stored_etag().as_deref(), Some("\"v1\""));
        assert_eq!(entries(dir.path()), ["asn.mmdb", "asn.mmdb.etag"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }

        // A server that sends no ETag: no stale one is kept.
        target.install(part(&target, &demo()), None).unwrap();
        assert_eq!(target.stored_etag(), None);
        assert_eq!(entries(dir.path()), ["asn.mmdb"]);
    }

    #[test]
    fn an_invalid_database_leaves_the_file_and_no_leftover() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("asn.mmdb");
        std::fs::write(&out, demo()).unwrap();
        std::fs::write(dir.path().join("asn.mmdb.etag"), "\"v1\"\n").unwrap();
        let target = Target::new(&out).unwrap();
        let mut cut = demo();
        cut.truncate(cut.len() / 2);
        let err = target
            .install(part(&target, &cut), Some("\"v2\""))
            .unwrap_err();
        assert!(matches!(err, FetchError::Invalid(_)), "{err:?}");
        assert_eq!(std::fs::read(&out).unwrap(), demo());
        assert_eq!(target.stored_etag().as_deref(), Some("\"v1\""));
        assert_eq!(entries(dir.path()), ["asn.mmdb", "asn.mmdb.etag"]);
    }

    #[test]
    fn leftovers_of_this_file_only_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::new(&dir.path().join("asn.mmdb")).unwrap();
        let left = target.temp_file().unwrap();
        let (_file, path) = left.keep().unwrap();
        std::fs::write(dir.path().join(".city.mmdb.abc.part"), b"x").unwrap();
        std::fs::write(dir.path().join("asn.mmdb"), b"x").unwrap();
        target.remove_leftovers();
        assert!(!path.exists());
        assert_eq!(entries(dir.path()), [".city.mmdb.abc.part", "asn.mmdb"]);
    }

    #[test]
    fn stored_etags_must_be_plain() {
        assert_eq!(plain_etag("\"abc\""), Some("\"abc\"".into()));
        assert_eq!(plain_etag("W/\"abc\""), Some("W/\"abc\"".into()));
        assert_eq!(plain_etag(""), None);
        assert_eq!(plain_etag("a\nb"), None);
        assert_eq!(plain_etag(&"x".repeat(300)), None);
        assert!(Target::new(Path::new("/")).is_none());
        assert_eq!(
            Target::new(Path::new("db.mmdb")).unwrap().dir,
            PathBuf::from(".")
        );
    }
}
