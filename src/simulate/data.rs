//! Deterministic IP data: the owner of an address is the most specific known prefix
//! (CSV rows first, then the built-in table), else an ASN picked by a hash of the /16
//! (IPv4) or /32 (IPv6); threat score, flags and city come from a hash of the address.
//! Same address, same answer, on every run and every machine.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;

use super::tables::{self, City, Country, COUNTRIES};
use super::SimError;

/// An autonomous system as the simulator knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct AsnInfo {
    /// AS number.
    pub number: u32,
    /// Registry handle, e.g. `GOOGLE`.
    pub handle: String,
    /// Organisation.
    pub org: String,
    /// Domain, empty when unknown.
    pub domain: String,
    /// Registration country (ISO alpha-2).
    pub country: String,
    /// Regional registry.
    pub rir: String,
    /// `isp`, `hosting`, `business`, `education` or `government`.
    pub kind: String,
    /// Allocation date `YYYY-MM-DD`.
    pub allocated: String,
}

/// Everything the providers say about one public address.
#[derive(Debug, Clone)]
pub struct IpProfile {
    pub ip: IpAddr,
    pub asn: Arc<AsnInfo>,
    /// The announced prefix that contains the address.
    pub route: IpNet,
    pub country: &'static Country,
    pub city: &'static City,
    /// 0-100.
    pub threat_score: u8,
    pub is_tor: bool,
    pub is_proxy: bool,
    pub is_vpn: bool,
    pub is_relay: bool,
    pub is_hosting: bool,
    /// A verified crawler (only Googlebot's range).
    pub googlebot: bool,
    /// The address hash, for providers that derive more from it.
    pub hash: u64,
}

/// The networks and ASNs answers are drawn from.
#[derive(Debug, Clone)]
pub struct Dataset {
    by_number: BTreeMap<u32, Arc<AsnInfo>>,
    /// Most specific first.
    prefixes: Vec<(IpNet, Arc<AsnInfo>)>,
    pool: Vec<Arc<AsnInfo>>,
}

/// splitmix64 finaliser over FNV-1a: a stable, well-mixed hash of bytes.
pub fn hash_bytes(salt: u64, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Public unicast: not private, loopback, link-local, CGNAT, documentation, benchmark,
/// multicast, reserved, unique-local or unspecified.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0
                || (s[0] & 0xe000) != 0x2000)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(o[0] == 0
        || ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || ip.is_documentation()
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || o[0] >= 224)
}

fn rir_for(country: &str) -> &'static str {
    match country {
        "US" | "CA" => "ARIN",
        "BR" | "AR" | "MX" | "CL" | "CO" => "LACNIC",
        "JP" | "KR" | "SG" | "AU" | "IN" | "CN" | "HK" | "TW" => "APNIC",
        "ZA" | "NG" | "KE" | "EG" => "AFRINIC",
        _ => "RIPE",
    }
}

impl Dataset {
    /// The built-in table only.
    pub fn builtin() -> Dataset {
        let mut by_number = BTreeMap::new();
        let mut pool = Vec::new();
        for (i, &(number, handle, org, domain, country, rir, kind, allocated)) in
            tables::ASNS.iter().enumerate()
        {
            let info = Arc::new(AsnInfo {
                number,
                handle: handle.into(),
                org: org.into(),
                domain: domain.into(),
                country: country.into(),
                rir: rir.into(),
                kind: kind.into(),
                allocated: allocated.into(),
            });
            if i < tables::POOL_LEN {
                pool.push(info.clone());
            }
            by_number.insert(number, info);
        }
        let mut prefixes: Vec<(IpNet, Arc<AsnInfo>)> = tables::PREFIXES
            .iter()
            .filter_map(|(net, asn)| Some((net.parse().ok()?, by_number.get(asn)?.clone())))
            .collect();
        prefixes.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        Dataset {
            by_number,
            prefixes,
            pool,
        }
    }

    /// Built-in data plus the rows of a `network,asn,organization,country` CSV; CSV
    /// prefixes win over built-in ones of the same length.
    pub fn with_csv(path: &Path) -> Result<Dataset, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut data = Dataset::builtin();
        let mut rows = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            let header = rows.is_empty() && line.starts_with("network,");
            if line.is_empty() || line.starts_with('#') || header {
                continue;
            }
            let fields = split_csv(line);
            let bad = || SimError::Csv {
                line: n + 1,
                reason: format!("cannot parse {line:?}"),
            };
            if fields.len() != 4 {
                return Err(bad());
            }
            let net: IpNet = fields[0].trim().parse().map_err(|_| bad())?;
            let asn_text = fields[1].trim();
            let asn_text = asn_text.strip_prefix("AS").unwrap_or(asn_text);
            let number: u32 = asn_text.parse().map_err(|_| bad())?;
            let org = fields[2].trim().to_string();
            let country = fields[3].trim().to_ascii_uppercase();
            let info = data.by_number.get(&number).cloned().unwrap_or_else(|| {
                let handle: String = org
                    .to_ascii_uppercase()
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .take(24)
                    .collect();
                Arc::new(AsnInfo {
                    number,
                    handle,
                    org: org.clone(),
                    domain: String::new(),
                    rir: rir_for(&country).into(),
                    country: country.clone(),
                    kind: "isp".into(),
                    allocated: "2000-01-01".into(),
                })
            });
            data.by_number.entry(number).or_insert_with(|| info.clone());
            rows.push((net.trunc(), info));
        }
        rows.append(&mut data.prefixes);
        // Stable sort keeps CSV rows ahead of built-in rows of equal length.
        rows.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        data.prefixes = rows;
        Ok(data)
    }

    /// The ASN with this number, if known.
    pub fn asn(&self, number: u32) -> Option<Arc<AsnInfo>> {
        self.by_number.get(&number).cloned()
    }

    /// Every known prefix with its owner, most specific first (CSV before built-in).
    pub fn prefixes(&self) -> &[(IpNet, Arc<AsnInfo>)] {
        &self.prefixes
    }

    /// Known prefixes announced by an ASN.
    pub fn routes_of(&self, number: u32) -> Vec<IpNet> {
        self.prefixes
            .iter()
            .filter(|(_, a)| a.number == number)
            .map(|(n, _)| *n)
            .collect()
    }

    /// The profile of a public address (callers check [`is_public`] first).
    pub fn profile(&self, ip: IpAddr) -> IpProfile {
        let hash = hash_bytes(1, &ip_bytes(ip));
        let (asn, route) = match self.prefixes.iter().find(|(net, _)| net.contains(&ip)) {
            Some((net, asn)) => (asn.clone(), *net),
            None => {
                let route = match ip {
                    IpAddr::V4(v4) => IpNet::new(IpAddr::V4(v4), 16),
                    IpAddr::V6(v6) => IpNet::new(IpAddr::V6(v6), 32),
                }
                .map(|n| n.trunc())
                .unwrap_or_else(|_| IpNet::from(ip));
                let h = hash_bytes(2, &ip_bytes(route.network()));
                (
                    self.pool[(h % self.pool.len() as u64) as usize].clone(),
                    route,
                )
            }
        };
        let country = COUNTRIES
            .iter()
            .find(|c| c.code == asn.country)
            .unwrap_or(&COUNTRIES[0]);
        let city = &country.cities[((hash >> 8) % country.cities.len() as u64) as usize];
        let bucket = hash % 1000;
        let spread = (hash >> 16) % 25;
        let threat_score = match bucket {
            0..=699 => spread,
            700..=849 => 26 + spread,
            850..=949 => 51 + spread,
            _ => 76 + spread,
        } as u8;
        let is_hosting = asn.kind == "hosting";
        let googlebot = tables::GOOGLEBOT_RANGE
            .parse::<IpNet>()
            .is_ok_and(|n| n.contains(&ip));
        IpProfile {
            ip,
            route,
            country,
            city,
            threat_score,
            is_tor: threat_score >= 76 && (hash >> 32) % 3 == 0,
            is_proxy: threat_score >= 51 && (hash >> 36) % 4 == 0,
            is_vpn: (hash >> 40) % 12 == 0,
            is_relay: (hash >> 44) % 40 == 0,
            is_hosting,
            googlebot,
            hash,
            asn,
        }
    }
}

/// `low` up to 25, `medium` to 50, `high` to 75, `critical` above (ipinsights levels).
pub fn threat_level(score: u8) -> &'static str {
    match score {
        0..=25 => "low",
        26..=50 => "medium",
        51..=75 => "high",
        _ => "critical",
    }
}

/// Splits one CSV line, honouring double quotes (`"Org, Inc."`).
fn split_csv(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                if let Some(s) = out.last_mut() {
                    s.push('"');
                }
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            _ => {
                if let Some(s) = out.last_mut() {
                    s.push(c)
                }
            }
        }
    }
    out
}

/// A deterministic IPv6/IPv4 sample address inside a network (for ASN/CIDR summaries).
pub fn nth_address(net: IpNet, n: u64) -> IpAddr {
    match net {
        IpNet::V4(v4) => {
            let size = 1u64 << (32 - v4.prefix_len());
            let base = u32::from(v4.network());
            IpAddr::V4(Ipv4Addr::from(base.wrapping_add((n % size) as u32)))
        }
        IpNet::V6(v6) => {
            let base = u128::from(v6.network());
            IpAddr::V6(Ipv6Addr::from(base.wrapping_add(u128::from(n))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_ip_same_profile_and_known_prefixes_win() {
        let d = Dataset::builtin();
        let a = d.profile("93.184.216.34".parse().unwrap());
        let b = d.profile("93.184.216.34".parse().unwrap());
        assert_eq!(
            (a.asn.number, a.threat_score, a.is_tor),
            (b.asn.number, b.threat_score, b.is_tor)
        );
        assert_eq!(d.profile("8.8.8.8".parse().unwrap()).asn.number, 15169);
        assert_eq!(d.profile("17.1.2.3".parse().unwrap()).asn.number, 714);
        // Same /16, same ASN.
        let c = d.profile("93.184.1.1".parse().unwrap());
        assert_eq!(a.asn.number, c.asn.number);
    }

    #[test]
    fn classification() {
        for ip in [
            "10.0.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "100.64.0.1",
            "203.0.113.42",
            "::1",
            "fd00::1",
            "224.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2001:4860::8888", "185.220.101.45"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn csv_rows_override_builtin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("asn.csv");
        std::fs::write(
            &path,
            "network,asn,organization,country\n8.8.8.0/24,64500,\"Example, Inc.\",NL\n",
        )
        .unwrap();
        let d = Dataset::with_csv(&path).unwrap();
        let p = d.profile("8.8.8.8".parse().unwrap());
        assert_eq!(
            (p.asn.number, p.asn.org.as_str(), p.asn.country.as_str()),
            (64500, "Example, Inc.", "NL")
        );
        assert_eq!(d.profile("8.8.4.4".parse().unwrap()).asn.number, 15169);
        std::fs::write(&path, "8.8.8.0/24,x,y,z\n").unwrap();
        assert!(matches!(
            Dataset::with_csv(&path),
            Err(SimError::Csv { line: 1, .. })
        ));
    }

    #[test]
    fn the_demo_csv_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/demo-asn.csv");
        let d = Dataset::with_csv(&path).unwrap();
        assert_eq!(d.profile("8.8.8.8".parse().unwrap()).asn.number, 15169);
        assert!(d.prefixes().len() > Dataset::builtin().prefixes().len());
        let bytes = super::super::database::mmdb_bytes(&d, "asn").unwrap();
        assert!(!bytes.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn profiles_are_stable_and_in_range(a in proptest::prelude::any::<u32>()) {
            let d = Dataset::builtin();
            let ip = IpAddr::V4(Ipv4Addr::from(a));
            let p = d.profile(ip);
            proptest::prop_assert!(p.threat_score <= 100);
            proptest::prop_assert!(p.route.contains(&ip));
            proptest::prop_assert_eq!(d.profile(ip).asn.number, p.asn.number);
        }
    }
}
