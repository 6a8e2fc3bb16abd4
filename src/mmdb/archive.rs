//! MaxMind's database archives: a `.tar.gz` holding `{edition}_{YYYYMMDD}/{edition}.mmdb`
//! beside licence and readme files. [`extract_database`] copies that one member out.
//!
//! Contract: an archive is hostile until proven otherwise. Only a regular file named
//! exactly `{edition}_{8 digits}/{edition}.mmdb` (a leading `./` allowed) is taken:
//! links, devices and other names are skipped, never followed, and nothing is written
//! but the one writer given. The member's copy stops with [`ArchiveError::TooLarge`]
//! past `max_member` bytes, and reading the decompressed stream stops past
//! `max_unpacked` bytes, so neither a large member nor a gzip bomb can fill the
//! disk or run long. Reading is streaming: memory stays a few buffers.

use std::io::{self, Read, Write};

use flate2::read::GzDecoder;

/// Why no database came out of an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The archive is not a readable `.tar.gz`, or ends early.
    #[error("reading the archive")]
    Read(#[source] io::Error),
    /// No member has the database's name.
    #[error("the archive holds no {edition}_YYYYMMDD/{edition}.mmdb")]
    NoDatabase { edition: String },
    /// The database, or the whole unpacked archive, is larger than allowed.
    #[error("the archive unpacks to more than {limit} bytes")]
    TooLarge { limit: u64 },
    /// The database could not be written out.
    #[error("writing the database out of the archive")]
    Write(#[source] io::Error),
}

/// Copies the database of `edition` out of the `.tar.gz` read from `archive` into
/// `out`; returns its size.
pub fn extract_database(
    archive: impl Read,
    edition: &str,
    out: &mut impl Write,
    max_member: u64,
    max_unpacked: u64,
) -> Result<u64, ArchiveError> {
    let unpacked = Capped {
        inner: GzDecoder::new(archive),
        left: max_unpacked,
    };
    let too_large = |e: io::Error, limit| {
        if e.kind() == io::ErrorKind::FileTooLarge {
            ArchiveError::TooLarge { limit }
        } else {
            ArchiveError::Read(e)
        }
    };
    let mut tar = tar::Archive::new(unpacked);
    let entries = tar.entries().map_err(ArchiveError::Read)?;
    for entry in entries {
        let entry = entry.map_err(|e| too_large(e, max_unpacked))?;
        if !entry.header().entry_type().is_file() || !is_database(&entry.path_bytes(), edition) {
            continue;
        }
        // The header's size bounds what the entry reads: checking it is the cap.
        let size = entry.size();
        if size > max_member {
            return Err(ArchiveError::TooLarge { limit: max_member });
        }
        let mut member = entry;
        let copied = copy(&mut member, out).map_err(|e| match e {
            Copy::Read(e) => too_large(e, max_unpacked),
            Copy::Write(e) => ArchiveError::Write(e),
        })?;
        if copied != size {
            return Err(ArchiveError::Read(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside the database",
            )));
        }
        return Ok(copied);
    }
    Err(ArchiveError::NoDatabase {
        edition: edition.to_owned(),
    })
}

/// True for `{edition}_{8 digits}/{edition}.mmdb`, with or without a leading `./`.
fn is_database(path: &[u8], edition: &str) -> bool {
    let path = path.strip_prefix(b"./").unwrap_or(path);
    let Some(slash) = path.iter().position(|&b| b == b'/') else {
        return false;
    };
    let (dir, file) = (&path[..slash], &path[slash + 1..]);
    let edition = edition.as_bytes();
    let date_ok = dir
        .strip_prefix(edition)
        .and_then(|rest| rest.strip_prefix(b"_"))
        .is_some_and(|date| date.len() == 8 && date.iter().all(u8::is_ascii_digit));
    let file_ok = file
        .strip_suffix(b".mmdb")
        .is_some_and(|name| name == edition);
    date_ok && file_ok
}

/// Which side of a copy failed.
enum Copy {
    Read(io::Error),
    Write(io::Error),
}

/// `io::copy`, telling a read failure (the archive) from a write failure (the disk).
fn copy(from: &mut impl Read, to: &mut impl Write) -> Result<u64, Copy> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(Copy::Write)?;
        total += n as u64;
    }
}

/// A reader that fails with `FileTooLarge` once more than `left` bytes were asked of it.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::FileTooLarge,
                "archive unpacks past the limit",
            )
        })?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;

    /// A `.tar.gz` of `(path, bytes)` regular files.
    fn tar_gz(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for (path, bytes) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, *bytes).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    fn extract(
        archive: &[u8],
        max_member: u64,
        max_unpacked: u64,
    ) -> Result<Vec<u8>, ArchiveError> {
        let mut out = Vec::new();
        extract_database(archive, "GeoLite2-ASN", &mut out, max_member, max_unpacked)?;
        Ok(out)
    }

    #[test]
    fn the_dated_member_is_extracted_and_the_rest_skipped() {
        let archive = tar_gz(&[
            ("GeoLite2-ASN_20260101/LICENSE.txt", b"licence"),
            ("GeoLite2-ASN_20260101/GeoLite2-Country.mmdb", b"other"),
            ("GeoLite2-ASN_20260101/GeoLite2-ASN.mmdb", b"database"),
        ]);
        assert_eq!(extract(&archive, 100, 1 << 20).unwrap(), b"database");
    }

    #[test]
    fn names_are_matched_exactly() {
        for (path, ok) in [
            ("GeoLite2-ASN_20260101/GeoLite2-ASN.mmdb", true),
            ("./GeoLite2-ASN_20260101/GeoLite2-ASN.mmdb", true),
            ("GeoLite2-ASN.mmdb", false),
            ("GeoLite2-ASN_2026011/GeoLite2-ASN.mmdb", false),
            ("GeoLite2-ASN_2026010x/GeoLite2-ASN.mmdb", false),
            ("../GeoLite2-ASN_20260101/GeoLite2-ASN.mmdb", false),
            ("GeoLite2-ASN_20260101/x/GeoLite2-ASN.mmdb", false),
            ("GeoLite2-ASN_20260101/GeoLite2-ASN.mmdb.bak", false),
            ("GeoLite2-City_20260101/GeoLite2-ASN.mmdb", false),
        ] {
            assert_eq!(is_database(path.as_bytes(), "GeoLite2-ASN"), ok, "{path}");
        }
    }

    #[test]
    fn an_archive_without_the_database_is_refused() {
        let archive = tar_gz(&[("GeoLite2-ASN_20260101/README.txt", b"readme")]);
        let err = extract(&archive, 100, 1 << 20).unwrap_err();
        assert!(matches!(err, ArchiveError::NoDatabase { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the archive holds no GeoLite2-ASN_YYYYMMDD/GeoLite2-ASN.mmdb"
        );
    }

    #[test]
    fn a_link_with_the_database_name_is_not_followed() {
        let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_cksum();
        builder
            .append_link(
                &mut header,
                "GeoLite2-ASN_20260101/GeoLite2-ASN.mmdb",
                "/etc/passwd",
            )
            .unwrap();
        let archive = builder.into_inner().unwrap().finish().unwrap();
        let err = extract(&archive, 100, 1 << 20).unwrap_err();
        assert!(matches!(err, ArchiveError::NoDatabase { .. }), "{err:?}");
    }

    #[test]
    fn a_member_past_the_cap_is_refused() {
        let big = vec![0u8; 1000];
        let archive = tar_gz(&[("GeoLite2-ASN_20260101/GeoLite2-ASN.mmdb", &big)]);
        let err = extract(&archive, 999, 1 << 20).unwrap_err();
        assert!(
            matches!(err, ArchiveError::TooLarge { limit: 999 }),
            "{err:?}"
        );
        assert_eq!(extract(&archive, 1000, 1 << 20).unwrap().len(), 1000);
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_unpacked_cap() {
        // 4 MiB of zeros before the database compress to a few KiB.
        let zeros = vec![0u8; 4 << 20];
        let archive = tar_gz(&[
            ("GeoLite2-ASN_20260101/padding.bin", &zeros),
            ("GeoLite2-ASN_20260101/GeoLite2-ASN.mmdb", b"database"),
        ]);
        assert!(archive.len() < 64 * 1024, "{}", archive.len());
        let err = extract(&archive, 100, 1 << 20).unwrap_err();
        assert!(
            matches!(err, ArchiveError::TooLarge { limit } if limit == 1 << 20),
            "{err:?}"
        );
        assert_eq!(extract(&archive, 100, 8 << 20).unwrap(), b"database");
    }

    #[test]
    fn garbage_is_a_read_error() {
        let err = extract(b"not a gzip stream at all", 100, 1 << 20).unwrap_err();
        assert!(matches!(err, ArchiveError::Read(_)), "{err:?}");
        let archive = tar_gz(&[("GeoLite2-ASN_20260101/GeoLite2-ASN.mmdb", b"database")]);
        let cut = &archive[..archive.len() / 2];
        assert!(extract(cut, 100, 1 << 20).is_err());
    }
}
