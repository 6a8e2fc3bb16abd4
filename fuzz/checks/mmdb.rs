//! The MMDB-file property, shared by the `mmdb_file` fuzz target and
//! `tests/properties.rs`.
//!
//! Any bytes as a database file: opening either refuses the file or gives a
//! provider that answers every address without panicking. Then the file is
//! replaced by a shorter copy and reloaded: a refused replacement leaves the old
//! database answering exactly as before (mmdb.rs promises that a broken reload
//! keeps the loaded database).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipenrich::lookup::providers::mmdb::MmdbProvider;

/// Addresses asked every time: both ends of both families, the demo database's
/// ranges, an IPv4-mapped address; plus two taken from the input bytes.
const FIXED: [&str; 10] = [
    "0.0.0.0",
    "1.1.1.1",
    "8.8.8.8",
    "218.92.0.112",
    "255.255.255.255",
    "::",
    "::1",
    "2a01:4f8:c17:1234::2",
    "::ffff:8.8.8.8",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
];

/// Writes `bytes` to `path` and checks the property; panics when it fails.
pub fn check_mmdb(bytes: &[u8], path: &Path) {
    std::fs::write(path, bytes).expect("write the database file");
    let Ok(provider) = MmdbProvider::open(path) else {
        return;
    };
    let _ = provider.database_type();
    let addresses = addresses(bytes);
    let before = answers(&provider, &addresses);
    // A different length is a change to `reload_if_changed`, whatever the mtime says.
    std::fs::write(path, &bytes[..bytes.len() / 2]).expect("rewrite the database file");
    if provider.reload_if_changed().is_err() {
        assert_eq!(
            answers(&provider, &addresses),
            before,
            "a refused reload changed the answers"
        );
    } else {
        let _ = answers(&provider, &addresses);
    }
}

fn addresses(bytes: &[u8]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = FIXED
        .iter()
        .map(|s| s.parse().expect("address literal"))
        .collect();
    let mut v6 = [0u8; 16];
    for (d, s) in v6.iter_mut().zip(bytes.iter().rev()) {
        *d = *s;
    }
    out.push(IpAddr::V6(Ipv6Addr::from(v6)));
    out.push(IpAddr::V4(Ipv4Addr::new(v6[0], v6[1], v6[2], v6[3])));
    out
}

/// Answers as text: records hold floats, and a NaN coordinate is not equal to itself.
fn answers(provider: &MmdbProvider, addresses: &[IpAddr]) -> Vec<String> {
    addresses
        .iter()
        .map(|&ip| format!("{:?}", provider.lookup_sync(ip)))
        .collect()
}
