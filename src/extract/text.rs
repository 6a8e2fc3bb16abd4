//! Free-text scanner: finds IPv4 and IPv6 addresses in arbitrary log text.
//!
//! Contract: [`scan`] reports every address it finds, in order of appearance, in
//! canonical form (IPv4-mapped IPv6 becomes IPv4), and never allocates. It runs in
//! time linear in the input, whatever the input: it jumps with `memchr` from one `.` or
//! `:` to the next, grows each hit into the maximal *run* of address bytes
//! (`[0-9A-Fa-f.:]`) around it, looks at each run a bounded number of times, and lets
//! `std::net` have the last word on validity. Text with no `.` and no `:` costs one
//! `memchr2` pass.
//!
//! What counts as an address (the decisions behind the tests):
//! - A candidate must not be glued to a word: a letter or `_` right before or after it
//!   rejects it (`v1.2.3.4`, `1.2.3.4x`, `Foo::Bar`, `std::cerr`). A `%zone` suffix,
//!   ports, brackets, quotes, `=`, `/`, `,`, `-` and whitespace are all separators.
//! - A dotted quad glued to more dots or digits is not an address (`1.2.3.4.5`,
//!   `.1.2.3.4`, `1.2.3.4.example`); one trailing `.` is sentence punctuation
//!   (`from 1.2.3.4.`). Octets with leading zeros (`01.2.3.4`) are rejected, never read
//!   as octal; `std` rejects them.
//! - `:` separates: `1.2.3.4:22`, `client:1.2.3.4`, `src:2001:db8::1`. Unbracketed IPv6
//!   with a port is only split when the address ends in an embedded IPv4
//!   (`::ffff:1.2.3.4:80`); `2001:db8::1:443` is itself a valid address and is reported
//!   as such. A key made only of hex letters right before an IPv6 address without a
//!   separator other than `:` (`add:2001:db8::1`) also forms a valid, non-public address:
//!   bracket IPv6 when it matters.
//! - MAC addresses (6 groups), timestamps (`12:34:56`) and colon fingerprints are not
//!   valid IPv6 and are not reported; no sub-part of a run is tried except as above.

use memchr::{memchr, memchr2, memrchr};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest textual IPv6 address: `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`.
const MAX_V6_LEN: usize = 45;
/// Longest textual IPv4 address: `255.255.255.255`.
const MAX_V4_LEN: usize = 15;
/// Shortest textual IPv4 address: `0.0.0.0`.
const MIN_V4_LEN: usize = 7;

/// Calls `found` for every address in `text`, in order of appearance, canonical form
/// (IPv4-mapped IPv6 `::ffff:1.2.3.4` is reported as the IPv4 1.2.3.4).
pub fn scan(text: &str, mut found: impl FnMut(IpAddr)) {
    let bytes = text.as_bytes();
    let mut pos = 0;
    while let Some(off) = memchr2(b'.', b':', &bytes[pos..]) {
        let hit = pos + off;
        // Every byte between `pos` and `hit` is walked at most once here and once by
        // memchr2, and runs never overlap: linear overall.
        let mut start = hit;
        while start > pos && is_addr_byte(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = hit + 1;
        while end < bytes.len() && is_addr_byte(bytes[end]) {
            end += 1;
        }
        Run { text, start, end }.report(&mut found);
        pos = end;
    }
}

/// Bytes that can appear in a textual address (without zone).
fn is_addr_byte(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b'.' || b == b':'
}

/// A byte that glues a candidate to a word. Digits, hex letters, `.` and `:` are
/// address bytes, so at a run's edge only the remaining letters and `_` can occur.
fn is_glue(b: Option<u8>) -> bool {
    matches!(b, Some(c) if c.is_ascii_alphanumeric() || c == b'_')
}

/// One maximal run of address bytes `text[start..end]`.
struct Run<'a> {
    text: &'a str,
    start: usize,
    end: usize,
}

impl Run<'_> {
    fn byte(&self, i: usize) -> Option<u8> {
        self.text.as_bytes().get(i).copied()
    }

    /// The byte before index `i`, if any.
    fn before(&self, i: usize) -> Option<u8> {
        i.checked_sub(1).and_then(|j| self.byte(j))
    }

    fn report(&self, found: &mut impl FnMut(IpAddr)) {
        let bytes = &self.text.as_bytes()[self.start..self.end];
        if bytes.len() < 2 {
            return;
        }
        if memchr(b':', bytes).is_none() {
            if let Some(v4) = self.v4_at(self.start, self.end) {
                found(IpAddr::V4(v4));
            }
            return;
        }
        if let Some(ip) = self.colon_run() {
            found(ip);
        }
    }

    /// A dotted quad exactly at `text[a..z]`, allowing one trailing `.` when `z` is the
    /// run's end, with no glue on either side.
    fn v4_at(&self, a: usize, mut z: usize) -> Option<Ipv4Addr> {
        let b = self.text.as_bytes();
        if z == self.end && z > a && b[z - 1] == b'.' {
            z -= 1;
        }
        if z - a < MIN_V4_LEN || z - a > MAX_V4_LEN {
            return None;
        }
        if b[a] == b'.' || is_glue(self.before(a)) || self.glued_after(z) {
            return None;
        }
        self.text[a..z].parse().ok()
    }

    /// Whether a candidate ending at `z` is glued to a word after it. Inside a run the
    /// next byte is a `:` separator; after a trailing `.` we look past the dot, so
    /// `1.2.3.4.` ends a sentence but `4.3.2.1.in-addr` is a name.
    fn glued_after(&self, z: usize) -> bool {
        let b = self.text.as_bytes();
        (z == self.end || (z + 1 == self.end && b[z] == b'.')) && is_glue(self.byte(self.end))
    }

    fn v6_at(&self, a: usize, z: usize) -> Option<Ipv6Addr> {
        if z - a < 2 || z - a > MAX_V6_LEN {
            return None;
        }
        if is_glue(self.before(a)) || self.glued_after(z) {
            return None;
        }
        self.text[a..z].parse().ok()
    }

    /// A run containing `:`: IPv6, IPv4 with a port, or `key:IPv4`.
    fn colon_run(&self) -> Option<IpAddr> {
        let b = self.text.as_bytes();
        let (mut a, mut z) = (self.start, self.end);
        // Sentence punctuation after the address.
        if b[z - 1] == b'.' {
            z -= 1;
        }
        // A lone leading or trailing `:` is a separator (`client:` / `1.2.3.4: refused`);
        // a doubled one belongs to the address (`::1`, `fe80::`).
        if z - a >= 2 && b[a] == b':' && b[a + 1] != b':' {
            a += 1;
        }
        if z - a >= 2 && b[z - 1] == b':' && b[z - 2] != b':' {
            z -= 1;
        }
        if z - a < 2 {
            return None;
        }
        if let Some(v6) = self.v6_at(a, z) {
            return Some(IpAddr::V6(v6).to_canonical());
        }
        let Some(first_colon) = memchr(b':', &b[a..z]).map(|i| a + i) else {
            // Only a separator `:` was trimmed: `client:1.2.3.4`, `1.2.3.4: refused`.
            return self.v4_at(a, z).map(IpAddr::V4);
        };
        // `src:2001:db8::1`: the run starts inside a word, so its first group is the
        // tail of that word and the address starts after the first `:`.
        if a == self.start
            && is_glue(self.before(a))
            && b.get(first_colon + 1).is_some_and(|&c| c != b':')
        {
            if let Some(v6) = self.v6_at(first_colon + 1, z) {
                return Some(IpAddr::V6(v6).to_canonical());
            }
        }
        // `::ffff:1.2.3.4:80`: split a port only after an embedded IPv4 tail, where it
        // cannot be an IPv6 group.
        let last_colon = a + memrchr(b':', &b[a..z])?;
        let port = &b[last_colon + 1..z];
        if (1..=5).contains(&port.len()) && port.iter().all(u8::is_ascii_digit) {
            let head = &b[a..last_colon];
            if head.len() <= MAX_V6_LEN && memchr(b'.', head).is_some() {
                if let Some(v6) = self.v6_at(a, last_colon) {
                    return Some(IpAddr::V6(v6).to_canonical());
                }
            }
        }
        // `1.2.3.4:22`, `1.2.3.4:`.
        if memchr(b'.', &b[a..first_colon]).is_some() {
            return self.v4_at(a, first_colon).map(IpAddr::V4);
        }
        // `src:1.2.3.4`, `c:1.2.3.4:22`: a word without dots, then an IPv4.
        let seg = first_colon + 1;
        let seg_end = memchr(b':', &b[seg..self.end]).map_or(self.end, |i| seg + i);
        self.v4_at(seg, seg_end).map(IpAddr::V4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn found(text: &str) -> Vec<IpAddr> {
        let mut out = Vec::new();
        scan(text, |ip| out.push(ip));
        out
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().expect(s)).collect()
    }

    /// Input text -> every address `scan` must report, in order.
    const CASES: &[(&str, &[&str])] = &[
        // Plain forms.
        ("1.2.3.4", &["1.2.3.4"]),
        ("0.0.0.0", &["0.0.0.0"]),
        ("255.255.255.255", &["255.255.255.255"]),
        ("2001:db8::1", &["2001:db8::1"]),
        ("::1", &["::1"]),
        ("::", &["::"]),
        ("fe80::", &["fe80::"]),
        ("2001:0db8:0000:0000:0000:ff00:0042:8329", &["2001:db8::ff00:42:8329"]),
        ("2001:DB8::ABCD", &["2001:db8::abcd"]),
        ("1:2:3:4:5:6:7:8", &["1:2:3:4:5:6:7:8"]),
        // IPv4-mapped and embedded IPv4 tails.
        ("::ffff:1.2.3.4", &["1.2.3.4"]),
        ("::FFFF:8.8.8.8", &["8.8.8.8"]),
        ("64:ff9b::192.0.2.33", &["64:ff9b::c000:221"]),
        ("::1.2.3.4", &["::102:304"]),
        ("1:2:3:4:5:6:1.2.3.4", &["1:2:3:4:5:6:102:304"]),
        // Zones.
        ("fe80::1%eth0", &["fe80::1"]),
        ("ping fe80::1ff:fe23:4567:890a%en0 ok", &["fe80::1ff:fe23:4567:890a"]),
        ("[fe80::1%25eth0]:22", &["fe80::1"]),
        // Ports.
        ("1.2.3.4:22", &["1.2.3.4"]),
        ("connect 1.2.3.4:65535 done", &["1.2.3.4"]),
        ("[2001:db8::1]:443", &["2001:db8::1"]),
        ("[::ffff:1.2.3.4]:80", &["1.2.3.4"]),
        ("::ffff:1.2.3.4:80", &["1.2.3.4"]),
        ("64:ff9b::1.2.3.4:80", &["64:ff9b::102:304"]),
        ("listening on [::]:22 and 0.0.0.0:22", &["::", "0.0.0.0"]),
        // URLs.
        ("http://1.2.3.4/x", &["1.2.3.4"]),
        ("https://1.2.3.4:8443/a?b=c", &["1.2.3.4"]),
        ("http://[::1]:8080/", &["::1"]),
        ("http://[2606:4700:4700::1111]/dns-query", &["2606:4700:4700::1111"]),
        ("GET http://example.com/1.2.3.4 HTTP/1.1", &["1.2.3.4"]),
        // Quotes, brackets, parentheses, CIDR.
        ("\"1.2.3.4\"", &["1.2.3.4"]),
        ("'2001:db8::2'", &["2001:db8::2"]),
        ("(8.8.8.8)", &["8.8.8.8"]),
        ("<9.9.9.9>", &["9.9.9.9"]),
        ("{\"ip\":\"1.1.1.1\",\"v6\":\"2001:db8::3\"}", &["1.1.1.1", "2001:db8::3"]),
        ("route 10.0.0.0/8 via 10.0.0.1", &["10.0.0.0", "10.0.0.1"]),
        // Header chains and key=value.
        ("X-Forwarded-For: 1.2.3.4, 5.6.7.8", &["1.2.3.4", "5.6.7.8"]),
        ("X-Forwarded-For: 1.2.3.4,5.6.7.8,2001:db8::9", &["1.2.3.4", "5.6.7.8", "2001:db8::9"]),
        ("SRC=10.1.2.3 DST=203.0.113.9 PROTO=TCP", &["10.1.2.3", "203.0.113.9"]),
        ("rhost=198.51.100.7 user=root", &["198.51.100.7"]),
        ("client:1.2.3.4", &["1.2.3.4"]),
        ("src:1.2.3.4", &["1.2.3.4"]),
        ("src:1.2.3.4:5555", &["1.2.3.4"]),
        ("src:2001:db8::1", &["2001:db8::1"]),
        ("peer=[2001:db8::7]:51234", &["2001:db8::7"]),
        ("range 10.0.0.1-10.0.0.9", &["10.0.0.1", "10.0.0.9"]),
        ("user@192.168.1.10", &["192.168.1.10"]),
        // Sentence punctuation.
        ("connection from 1.2.3.4.", &["1.2.3.4"]),
        ("from 2001:db8::1.", &["2001:db8::1"]),
        ("refused 1.2.3.4: timeout", &["1.2.3.4"]),
        // Real log lines.
        (
            "Jan 12 03:04:05 host sshd[1234]: Failed password for invalid user admin from 203.0.113.5 port 52113 ssh2",
            &["203.0.113.5"],
        ),
        (
            "Jan 12 03:04:05 host sshd[99]: Accepted publickey for root from 2001:db8::5 port 22 ssh2: ED25519 SHA256:n4S4bX9eQ0t0Wd6uY6gV5m1tE2s3c4d5e6f7a8b9c0d",
            &["2001:db8::5"],
        ),
        (
            "2024-01-12 03:04:05,123 fail2ban.actions [812]: NOTICE [sshd] Ban 45.33.32.156",
            &["45.33.32.156"],
        ),
        (
            "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8 from 8.8.4.4",
            &["8.8.4.4"],
        ),
        (
            "2024-01-12T03:04:05.678Z kernel: IN=eth0 OUT= MAC=00:1a:2b:3c:4d:5e:00:11:22:33:44:55:08:00 SRC=185.220.101.1 DST=10.0.0.5",
            &["185.220.101.1", "10.0.0.5"],
        ),
        ("Disconnected from authenticating user root 1.2.3.4 port 22 [preauth]", &["1.2.3.4"]),
        // Rejected: bad octets, wrong shape, leading zeros.
        ("256.1.1.1", &[]),
        ("1.2.3.256", &[]),
        ("1.2.3", &[]),
        ("1.2.3.", &[]),
        ("1.2.3.4.5", &[]),
        ("1.2.3.4.5.6.7.8", &[]),
        (".1.2.3.4", &[]),
        ("1.2.3.4..", &[]),
        ("01.2.3.4", &[]),
        ("1.2.3.010", &[]),
        ("1.02.3.4", &[]),
        ("::ffff:01.2.3.4", &[]),
        ("1..2.3.4", &[]),
        // Rejected: glued to letters or digits.
        ("v1.2.3.4", &[]),
        ("version v10.0.0.1 released", &[]),
        ("1.2.3.4abc", &[]),
        ("1.2.3.4x", &[]),
        ("a1.2.3.4", &[]),
        ("host_1.2.3.4", &[]),
        ("1.2.3.4.example.com", &[]),
        ("4.3.2.1.in-addr.arpa", &[]),
        ("Foo::Bar", &[]),
        ("std::cerr << x", &[]),
        ("Ipv6Addr::new(0, 0)", &[]),
        // Rejected: MACs, timestamps, hashes, numbers.
        ("00:1a:2b:3c:4d:5e", &[]),
        ("00:1A:2B:3C:4D:5E", &[]),
        ("12:34:56", &[]),
        ("12:34:56.789", &[]),
        ("2024-01-12T03:04:05.678Z", &[]),
        ("d41d8cd98f00b204e9800998ecf8427e", &[]),
        ("43:51:43:a1:b5:fc:8b:b7:0a:3a:a9:b1:0f:66:73:a8", &[]),
        ("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", &[]),
        ("pi is 3.14159 and e is 2.71828", &[]),
        ("1.2.3.4.5:80", &[]),
        ("2001:db8::1::2", &[]),
        ("12345::1", &[]),
        (":::", &[]),
        ("no addresses in this line at all", &[]),
        ("", &[]),
        // Special ranges are all found (classification happens elsewhere).
        ("10.0.0.1 172.16.0.1 192.168.0.1", &["10.0.0.1", "172.16.0.1", "192.168.0.1"]),
        ("100.64.0.1 127.0.0.1 169.254.1.1", &["100.64.0.1", "127.0.0.1", "169.254.1.1"]),
        ("192.0.0.8 192.0.2.1 198.51.100.1 203.0.113.1", &["192.0.0.8", "192.0.2.1", "198.51.100.1", "203.0.113.1"]),
        ("198.18.0.1 224.0.0.1 240.0.0.1", &["198.18.0.1", "224.0.0.1", "240.0.0.1"]),
        ("fc00::1 fd00::2 fe80::3 ff02::1", &["fc00::1", "fd00::2", "fe80::3", "ff02::1"]),
        ("2002:c000:204::1 100::1 3fff::1 64:ff9b:1::1", &["2002:c000:204::1", "100::1", "3fff::1", "64:ff9b:1::1"]),
    ];

    #[test]
    fn case_table() {
        assert!(CASES.len() >= 60, "{} cases", CASES.len());
        let mut wrong = Vec::new();
        for &(text, want) in CASES {
            let got = found(text);
            if got != ips(want) {
                wrong.push(format!("{text:?}: got {got:?}, want {want:?}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} wrong:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }

    #[test]
    fn mapped_ipv6_is_reported_as_ipv4() {
        assert_eq!(
            found("::ffff:203.0.113.9"),
            vec![IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))]
        );
        assert_eq!(
            found("::ffff:cb00:7109"),
            vec![IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))]
        );
    }

    #[test]
    fn ten_thousand_addresses_on_one_line() {
        let mut line = String::new();
        let mut want = Vec::new();
        for i in 0..10_000u32 {
            let v4 = Ipv4Addr::from(0x0800_0000 + i * 7919);
            line.push_str(&format!("{v4}, "));
            want.push(IpAddr::V4(v4));
            if i % 10 == 0 {
                let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16);
                line.push_str(&format!("[{v6}]:443 "));
                want.push(IpAddr::V6(v6));
            }
        }
        assert_eq!(found(&line), want);
    }

    /// Linear time: these would take hours if any run were rescanned per byte. They also
    /// pin the answers, so a change that starts reporting sub-parts fails here.
    #[test]
    fn hostile_inputs_are_rejected_whole() {
        let dots_and_digits: String = "1.2.3.4.".repeat(1_250_000); // 10 MB
        assert_eq!(found(&dots_and_digits), Vec::<IpAddr>::new());
        let colons: String = ":".repeat(1_000_000);
        assert_eq!(found(&colons), Vec::<IpAddr>::new());
        let groups: String = "ab:".repeat(300_000);
        assert_eq!(found(&groups), Vec::<IpAddr>::new());
        let mixed: String = "1:1.".repeat(300_000);
        assert_eq!(found(&mixed), Vec::<IpAddr>::new());
        let dots: String = ".".repeat(1_000_000);
        assert_eq!(found(&dots), Vec::<IpAddr>::new());
    }

    fn separator_layouts(ip: &str, port: u16) -> Vec<String> {
        vec![
            format!(" {ip} "),
            format!("\"{ip}\""),
            format!("'{ip}'"),
            format!(",{ip},"),
            format!("={ip};"),
            format!("({ip})"),
            format!("[{ip}]:{port}"),
            format!("<{ip}>"),
            format!("\t{ip}\n"),
        ]
    }

    /// Surrounding text without `.` or `:`, so the embedded address is the only one.
    fn filler() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 ,;=()\"'<>\\[\\]/_-]{0,24}"
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
            any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
            // Mapped, NAT64 and compressed-heavy shapes are rare among random u128.
            any::<u32>().prop_map(|n| IpAddr::V6(Ipv4Addr::from(n).to_ipv6_mapped())),
            (any::<u16>(), any::<u16>(), 0usize..8).prop_map(|(a, b, at)| {
                let mut s = [0u16; 8];
                s[at] = a;
                s[7 - at] = b;
                IpAddr::V6(Ipv6Addr::from(s))
            }),
        ]
    }

    proptest! {
        #[test]
        fn embedded_address_is_found(
            ip in any_ip(),
            pre in filler(),
            post in filler(),
            port in any::<u16>(),
            layout in 0usize..9,
        ) {
            let rendered = ip.to_string();
            let text = format!("{pre}{}{post}", separator_layouts(&rendered, port)[layout]);
            prop_assert_eq!(found(&text), vec![ip.to_canonical()], "text {:?}", text);
        }

        #[test]
        fn embedded_address_is_found_among_noise(
            ip in any_ip(),
            pre in "[ -~]{0,40}",
            post in "[ -~]{0,40}",
            layout in 0usize..9,
        ) {
            let rendered = ip.to_string();
            let text = format!("{pre}{}{post}", separator_layouts(&rendered, 443)[layout]);
            let got = found(&text);
            prop_assert!(got.contains(&ip.to_canonical()), "text {:?} got {:?}", text, got);
        }

        #[test]
        fn scan_never_panics(text in "\\PC{0,200}") {
            scan(&text, |_| {});
        }

        #[test]
        fn scan_never_panics_on_address_like_noise(text in "[0-9a-fA-F.:%\\[\\] x_]{0,120}") {
            let mut n = 0usize;
            scan(&text, |_| n += 1);
            // At most one address per run, runs are separated by a byte.
            prop_assert!(n <= text.len() / 2 + 1);
        }
    }
}
