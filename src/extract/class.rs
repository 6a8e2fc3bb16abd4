//! Classification of addresses by the IANA special-purpose registries.
//!
//! Contract: [`classify`] is a pure, total function; only [`IpClass::Public`] addresses
//! are ever looked up or reported, so anything special-purpose, deprecated, or outside
//! the global unicast space (IPv6 `2000::/3`) is *not* public. When a block is in doubt
//! it is classified [`IpClass::Reserved`]. Sources:
//! <https://www.iana.org/assignments/iana-ipv4-special-registry/> and
//! <https://www.iana.org/assignments/iana-ipv6-special-registry/>.
//!
//! IPv6 forms that carry an IPv4 address (IPv4-mapped `::ffff:0:0/96` and the NAT64
//! well-known prefix `64:ff9b::/96`) are classified by the embedded IPv4 address, so
//! `::ffff:10.0.0.1` is private just like `10.0.0.1`. 6to4 (`2002::/16`) and Teredo
//! (`2001::/32`) are reserved: their embedded IPv4 is a tunnel endpoint, not the peer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The class of an address. Only [`IpClass::Public`] is globally routable unicast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpClass {
    /// Global unicast, not in any special-purpose block.
    Public,
    /// RFC 1918: `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// `127/8`, `::1`.
    Loopback,
    /// `169.254/16`, `fe80::/10`.
    LinkLocal,
    /// RFC 6598 shared address space `100.64/10`.
    Cgnat,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// RFC 2544 benchmarking `198.18/15`.
    Benchmarking,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `fc00::/7`.
    UniqueLocal,
    /// `0.0.0.0`, `::`.
    Unspecified,
    /// `255.255.255.255`.
    Broadcast,
    /// Every other special-purpose, deprecated or unallocated block.
    Reserved,
}

impl IpClass {
    /// The lowercase snake_case name written into events.
    /// Every class, in declaration order (`ALL[c as usize] == c`).
    pub const ALL: [IpClass; 12] = [
        IpClass::Public,
        IpClass::Private,
        IpClass::Loopback,
        IpClass::LinkLocal,
        IpClass::Cgnat,
        IpClass::Documentation,
        IpClass::Benchmarking,
        IpClass::Multicast,
        IpClass::UniqueLocal,
        IpClass::Unspecified,
        IpClass::Broadcast,
        IpClass::Reserved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IpClass::Public => "public",
            IpClass::Private => "private",
            IpClass::Loopback => "loopback",
            IpClass::LinkLocal => "link_local",
            IpClass::Cgnat => "cgnat",
            IpClass::Documentation => "documentation",
            IpClass::Benchmarking => "benchmarking",
            IpClass::Multicast => "multicast",
            IpClass::UniqueLocal => "unique_local",
            IpClass::Unspecified => "unspecified",
            IpClass::Broadcast => "broadcast",
            IpClass::Reserved => "reserved",
        }
    }

    /// True only for [`IpClass::Public`]: the one class that is looked up and reported.
    pub fn is_public(self) -> bool {
        self == IpClass::Public
    }
}

/// The IPv4 peer behind an IPv4-mapped (`::ffff:a.b.c.d`) or NAT64 well-known
/// prefix (`64:ff9b::a.b.c.d`) address, else `ip`: the address an allow-list, a
/// cooldown or a report must see.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.segments() {
            [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                IpAddr::V4(Ipv4Addr::new(a, b, c, d))
            }
            _ => ip.to_canonical(),
        },
        v4 => v4,
    }
}

/// Classifies an address (see the module docs for the blocks and their sources).
pub fn classify(ip: IpAddr) -> IpClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> IpClass {
    match ip.octets() {
        [0, 0, 0, 0] => IpClass::Unspecified,
        // "this network" 0/8.
        [0, ..] => IpClass::Reserved,
        [10, ..] => IpClass::Private,
        [100, b, ..] if b & 0xc0 == 64 => IpClass::Cgnat,
        [127, ..] => IpClass::Loopback,
        [169, 254, ..] => IpClass::LinkLocal,
        [172, b, ..] if b & 0xf0 == 16 => IpClass::Private,
        // IETF protocol assignments; the two anycast /32s in it are not worth a lookup.
        [192, 0, 0, _] => IpClass::Reserved,
        [192, 0, 2, _] => IpClass::Documentation,
        // Deprecated 6to4 relay anycast (RFC 7526).
        [192, 88, 99, _] => IpClass::Reserved,
        [192, 168, ..] => IpClass::Private,
        [198, b, ..] if b & 0xfe == 18 => IpClass::Benchmarking,
        [198, 51, 100, _] => IpClass::Documentation,
        [203, 0, 113, _] => IpClass::Documentation,
        [255, 255, 255, 255] => IpClass::Broadcast,
        [a, ..] if a >= 240 => IpClass::Reserved,
        [a, ..] if a >= 224 => IpClass::Multicast,
        _ => IpClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> IpClass {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    match s {
        [0, 0, 0, 0, 0, 0, 0, 0] => IpClass::Unspecified,
        [0, 0, 0, 0, 0, 0, 0, 1] => IpClass::Loopback,
        // NAT64 well-known prefix: the peer is the embedded IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
            let [a, b] = hi.to_be_bytes();
            let [c, d] = lo.to_be_bytes();
            classify_v4(Ipv4Addr::new(a, b, c, d))
        }
        // Local-use NAT64 64:ff9b:1::/48 and discard-only 100::/64.
        [0x64, 0xff9b, 1, ..] | [0x100, 0, 0, 0, ..] => IpClass::Reserved,
        [0x2001, 0xdb8, ..] => IpClass::Documentation,
        // IETF protocol assignments 2001::/23 (Teredo, ORCHID, AMT, AS112 ...).
        [0x2001, b, ..] if b < 0x200 => IpClass::Reserved,
        // 6to4: the embedded IPv4 is a relay, never look it up.
        [0x2002, ..] => IpClass::Reserved,
        [0x3fff, b, ..] if b < 0x1000 => IpClass::Documentation,
        [a, ..] if a & 0xfe00 == 0xfc00 => IpClass::UniqueLocal,
        [a, ..] if a & 0xffc0 == 0xfe80 => IpClass::LinkLocal,
        [a, ..] if a & 0xff00 == 0xff00 => IpClass::Multicast,
        [a, ..] if a & 0xe000 == 0x2000 => IpClass::Public,
        // Outside global unicast 2000::/3: IPv4-compatible, site-local, SRv6 SIDs, unallocated.
        _ => IpClass::Reserved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IpClass::*;

    #[test]
    fn all_is_indexed_by_discriminant() {
        for (i, c) in IpClass::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?}");
        }
    }

    const TABLE: &[(&str, IpClass)] = &[
        // IPv4, both edges of each block where cheap.
        ("0.0.0.0", Unspecified),
        ("0.0.0.1", Reserved),
        ("0.255.255.255", Reserved),
        ("1.0.0.0", Public),
        ("9.255.255.255", Public),
        ("10.0.0.0", Private),
        ("10.255.255.255", Private),
        ("11.0.0.0", Public),
        ("100.63.255.255", Public),
        ("100.64.0.0", Cgnat),
        ("100.127.255.255", Cgnat),
        ("100.128.0.0", Public),
        ("126.255.255.255", Public),
        ("127.0.0.0", Loopback),
        ("127.0.0.1", Loopback),
        ("127.255.255.255", Loopback),
        ("128.0.0.0", Public),
        ("169.253.255.255", Public),
        ("169.254.0.0", LinkLocal),
        ("169.254.255.255", LinkLocal),
        ("169.255.0.0", Public),
        ("172.15.255.255", Public),
        ("172.16.0.0", Private),
        ("172.31.255.255", Private),
        ("172.32.0.0", Public),
        ("191.255.255.255", Public),
        ("192.0.0.0", Reserved),
        ("192.0.0.255", Reserved),
        ("192.0.1.255", Public),
        ("192.0.2.0", Documentation),
        ("192.0.2.255", Documentation),
        ("192.0.3.0", Public),
        ("192.88.99.1", Reserved),
        ("192.167.255.255", Public),
        ("192.168.0.0", Private),
        ("192.168.255.255", Private),
        ("192.169.0.0", Public),
        ("198.17.255.255", Public),
        ("198.18.0.0", Benchmarking),
        ("198.19.255.255", Benchmarking),
        ("198.20.0.0", Public),
        ("198.51.99.255", Public),
        ("198.51.100.0", Documentation),
        ("198.51.100.255", Documentation),
        ("198.51.101.0", Public),
        ("203.0.112.255", Public),
        ("203.0.113.0", Documentation),
        ("203.0.113.255", Documentation),
        ("203.0.114.0", Public),
        ("223.255.255.255", Public),
        ("224.0.0.0", Multicast),
        ("239.255.255.255", Multicast),
        ("240.0.0.0", Reserved),
        ("255.255.255.254", Reserved),
        ("255.255.255.255", Broadcast),
        ("8.8.8.8", Public),
        // IPv6.
        ("::", Unspecified),
        ("::1", Loopback),
        ("::2", Reserved),
        ("::ffff:0.0.0.0", Unspecified),
        ("::ffff:8.8.8.8", Public),
        ("::ffff:10.1.2.3", Private),
        ("::ffff:127.0.0.1", Loopback),
        ("::ffff:255.255.255.255", Broadcast),
        ("::8.8.8.8", Reserved),
        ("::ffff:0:808:808", Reserved),
        ("64:ff9b::8.8.8.8", Public),
        ("64:ff9b::10.0.0.1", Private),
        ("64:ff9b::c000:201", Documentation),
        ("64:ff9b::1:0:0", Reserved),
        ("64:ff9b:1::", Reserved),
        ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", Reserved),
        ("100::", Reserved),
        ("100::ffff:ffff:ffff:ffff", Reserved),
        ("100:0:0:1::", Reserved),
        ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Reserved),
        ("2000::", Public),
        ("2001::", Reserved),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Reserved),
        ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", Reserved),
        ("2001:200::", Public),
        ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", Public),
        ("2001:db8::", Documentation),
        ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", Documentation),
        ("2001:db9::", Public),
        ("2001:4860:4860::8888", Public),
        ("2002::", Reserved),
        ("2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Reserved),
        ("2003::", Public),
        ("2606:4700:4700::1111", Public),
        ("3ffe:ffff::", Public),
        ("3fff::", Documentation),
        ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", Documentation),
        ("3fff:1000::", Public),
        ("3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Public),
        ("4000::", Reserved),
        ("5f00::1", Reserved),
        ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Reserved),
        ("fc00::", UniqueLocal),
        ("fd12:3456::1", UniqueLocal),
        ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", UniqueLocal),
        ("fe00::", Reserved),
        ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Reserved),
        ("fe80::", LinkLocal),
        ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", LinkLocal),
        ("fec0::1", Reserved),
        ("ff00::", Multicast),
        ("ff02::1", Multicast),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Multicast),
    ];

    #[test]
    fn classification_table() {
        let mut wrong = Vec::new();
        for &(text, want) in TABLE {
            let ip: IpAddr = text.parse().expect(text);
            let got = classify(ip);
            if got != want {
                wrong.push(format!("{text}: got {got:?}, want {want:?}"));
            }
            assert_eq!(got.is_public(), want == Public, "{text}");
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn names_are_lowercase_snake_case_and_distinct() {
        let all = [
            Public,
            Private,
            Loopback,
            LinkLocal,
            Cgnat,
            Documentation,
            Benchmarking,
            Multicast,
            UniqueLocal,
            Unspecified,
            Broadcast,
            Reserved,
        ];
        let mut seen = std::collections::HashSet::new();
        for class in all {
            let name = class.as_str();
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            assert!(seen.insert(name), "duplicate name {name}");
            assert_eq!(class.is_public(), class == Public);
        }
        assert_eq!(LinkLocal.as_str(), "link_local");
        assert_eq!(UniqueLocal.as_str(), "unique_local");
    }
}
