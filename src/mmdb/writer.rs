//! A writer of MaxMind DB (format 2.0) files: `ipenrich mmdb build`, test fixtures, the
//! demo database and the simulator's downloads.
//!
//! Contract: the bytes written are a function of the inserted `(network, value)` set and
//! the metadata settings only, never of insertion order, and `build_epoch` defaults to 0,
//! so a fixture rebuilt from the same input is byte-identical (`samples/demo-asn.mmdb` is
//! checked against its CSV by a test). The tree is always an IPv6 tree (`ip_version` 6):
//! IPv4 networks live at `::/96` and the IPv4-mapped range `::ffff:0:0/96` is an alias
//! of that subtree, as in MaxMind's own databases. Where networks nest, the more
//! specific one wins, whatever the order of insertion. Identical records are stored
//! once, and repeated strings (map keys, organisation names) are stored once and
//! referenced by pointers.
//!
//! Format: <https://maxmind.github.io/MaxMind-DB/>. This is a small writer for own ranges,
//! fixtures and demos, not a replacement for MaxMind's `mmdbwriter`: it keeps the whole tree in memory, does not
//! merge adjacent networks and knows only the value types listed in [`MmdbValue`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

/// Marker that separates the data section from the metadata.
pub const METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";
/// Zero bytes between the search tree and the data section.
const DATA_SECTION_SEPARATOR: usize = 16;
/// The largest size a control byte can express (spec: "Payload size").
const MAX_SIZE: usize = 65_821 + 0xFF_FFFF;
/// Depth of the IPv4 subtree in the IPv6 tree.
const IPV4_DEPTH: u8 = 96;
/// `::ffff:0:0`, the IPv4-mapped prefix that aliases the IPv4 subtree.
const IPV4_MAPPED: u128 = 0xffff << 32;

// Data type numbers from the spec ("Output Data Section").
const T_POINTER: u8 = 1;
const T_STRING: u8 = 2;
const T_DOUBLE: u8 = 3;
const T_UINT16: u8 = 5;
const T_UINT32: u8 = 6;
const T_MAP: u8 = 7;
const T_UINT64: u8 = 9;
const T_ARRAY: u8 = 11;
const T_BOOL: u8 = 14;

/// A value in the data section.
#[derive(Debug, Clone, PartialEq)]
pub enum MmdbValue {
    /// A map with string keys, written in the given order; keys must be unique.
    Map(Vec<(String, MmdbValue)>),
    /// A UTF-8 string.
    String(String),
    /// An unsigned 16-bit integer.
    U16(u16),
    /// An unsigned 32-bit integer.
    U32(u32),
    /// An unsigned 64-bit integer.
    U64(u64),
    /// An IEEE 754 double.
    Double(f64),
    /// A boolean.
    Bool(bool),
    /// An array of values.
    Array(Vec<MmdbValue>),
}

impl MmdbValue {
    /// Shorthand for a map from `(&str, value)` pairs.
    pub fn map<'a>(pairs: impl IntoIterator<Item = (&'a str, MmdbValue)>) -> Self {
        MmdbValue::Map(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// Shorthand for a string value.
    pub fn string(s: &str) -> Self {
        MmdbValue::String(s.to_owned())
    }
}

/// Why a database could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum MmdbWriteError {
    /// The same network was inserted twice.
    #[error("network {net} is inserted twice")]
    DuplicateNetwork { net: IpNet },
    /// An IPv6 network inside the range that the tree reserves for IPv4.
    #[error("network {net} lies inside {range}, which holds the ipv4 tree; insert the ipv4 network instead")]
    Ipv4Range { net: IpNet, range: &'static str },
    /// A map repeats a key.
    #[error("map key {key:?} appears twice")]
    DuplicateKey { key: String },
    /// A string, map or array exceeds the format's size field.
    #[error("{what} of {len} exceeds the mmdb size limit of {MAX_SIZE}")]
    ValueTooLarge { what: &'static str, len: usize },
    /// The tree and data do not fit the chosen record size.
    #[error("{node_count} nodes and {data_len} data bytes do not fit {record_size}-bit records")]
    TooLarge {
        node_count: usize,
        data_len: usize,
        record_size: u16,
    },
    /// A record size other than 24, 28 or 32.
    #[error("record size {0} is not 24, 28 or 32")]
    RecordSize(u16),
    /// A line of the CSV input is malformed.
    #[error("csv line {line}: {message}")]
    Csv { line: usize, message: String },
    /// Writing the file failed.
    #[error("cannot write mmdb file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Builds a MaxMind DB file in memory.
#[derive(Debug, Clone)]
pub struct MmdbWriter {
    database_type: String,
    languages: Vec<String>,
    description: BTreeMap<String, String>,
    build_epoch: u64,
    /// `None`: the smallest record size that fits.
    record_size: Option<u16>,
    /// Keyed by (prefix length in the IPv6 tree, network bits), which sorts less
    /// specific networks first: the order in which they must enter the tree.
    networks: BTreeMap<(u8, u128), MmdbValue>,
}

impl MmdbWriter {
    /// An empty database of the given `database_type` (e.g. `GeoLite2-ASN`), with
    /// language `en`, a one-line English description and `build_epoch` 0.
    pub fn new(database_type: &str) -> Self {
        let mut description = BTreeMap::new();
        description.insert(
            "en".to_owned(),
            format!("{database_type} database written by ipenrich"),
        );
        MmdbWriter {
            database_type: database_type.to_owned(),
            languages: vec!["en".to_owned()],
            description,
            build_epoch: 0,
            record_size: None,
            networks: BTreeMap::new(),
        }
    }

    /// Sets the build time in seconds since the Unix epoch (default 0, for
    /// reproducible output).
    pub fn set_build_epoch(&mut self, epoch: u64) -> &mut Self {
        self.build_epoch = epoch;
        self
    }

    /// Sets the database type (e.g. `GeoLite2-ASN`, which some readers insist on).
    pub fn set_database_type(&mut self, database_type: &str) -> &mut Self {
        database_type.clone_into(&mut self.database_type);
        self
    }

    /// Sets the description in one language.
    pub fn set_description(&mut self, language: &str, text: &str) -> &mut Self {
        self.description
            .insert(language.to_owned(), text.to_owned());
        self
    }

    /// Removes every description, leaving the empty map that Python's `mmdb-writer`
    /// writes by default (the format allows it).
    pub fn clear_description(&mut self) -> &mut Self {
        self.description.clear();
        self
    }

    /// Sets the `languages` metadata list.
    pub fn set_languages(&mut self, languages: &[&str]) -> &mut Self {
        self.languages = languages.iter().map(|l| (*l).to_owned()).collect();
        self
    }

    /// Forces a record size (24, 28 or 32); by default the smallest that fits is used.
    pub fn set_record_size(&mut self, bits: u16) -> Result<&mut Self, MmdbWriteError> {
        if !matches!(bits, 24 | 28 | 32) {
            return Err(MmdbWriteError::RecordSize(bits));
        }
        self.record_size = Some(bits);
        Ok(self)
    }

    /// Number of inserted networks.
    pub fn len(&self) -> usize {
        self.networks.len()
    }

    /// True when no network was inserted.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// Adds `value` for `net` (host bits are ignored). Nested networks are allowed and
    /// the more specific one wins; the same network twice is an error. IPv6 networks
    /// inside `::/96` or `::ffff:0:0/96` are refused: those ranges are the IPv4 tree,
    /// so insert the IPv4 network. An IPv6 network that *contains* them (e.g. `::/0`)
    /// also covers IPv4 addresses that no IPv4 network covers.
    pub fn insert(&mut self, net: IpNet, value: MmdbValue) -> Result<(), MmdbWriteError> {
        let net = net.trunc();
        let key = match net {
            IpNet::V4(v4) => (
                IPV4_DEPTH + v4.prefix_len(),
                u128::from(u32::from(v4.network())),
            ),
            IpNet::V6(v6) => {
                let bits = u128::from(v6.network());
                let len = v6.prefix_len();
                if len >= IPV4_DEPTH {
                    if bits >> 32 == 0 {
                        return Err(MmdbWriteError::Ipv4Range {
                            net,
                            range: "::/96",
                        });
                    }
                    if bits >> 32 == IPV4_MAPPED >> 32 {
                        return Err(MmdbWriteError::Ipv4Range {
                            net,
                            range: "::ffff:0:0/96",
                        });
                    }
                }
                (len, bits)
            }
        };
        match self.networks.entry(key) {
            std::collections::btree_map::Entry::Occupied(_) => {
                Err(MmdbWriteError::DuplicateNetwork { net })
            }
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(value);
                Ok(())
            }
        }
    }

    /// Serialises the database.
    pub fn to_bytes(&self) -> Result<Vec<u8>, MmdbWriteError> {
        // Data section first: the tree records need the offsets.
        let mut data = DataSection::default();
        let mut value_offsets = Vec::with_capacity(self.networks.len());
        for value in self.networks.values() {
            value_offsets.push(data.add_record(value)?);
        }

        let tree = Tree::build(self.networks.keys().copied());
        let order = tree.numbering();
        let node_count = order.len();

        let max_record = node_count + DATA_SECTION_SEPARATOR + data.buf.len();
        let record_size = match self.record_size {
            Some(bits) => bits,
            None if max_record < 1 << 24 => 24,
            None if max_record < 1 << 28 => 28,
            None => 32,
        };
        if max_record > (1_u64 << record_size) as usize - 1 {
            return Err(MmdbWriteError::TooLarge {
                node_count,
                data_len: data.buf.len(),
                record_size,
            });
        }

        let node_bytes = usize::from(record_size) / 4;
        let mut out = Vec::with_capacity(node_count * node_bytes + 32 + data.buf.len() + 512);
        let record_value = |rec: Rec| -> u32 {
            // Fits: checked against the record size above.
            let v = match rec {
                Rec::Empty => node_count,
                Rec::Node(n) => order.number[n].expect("reachable node is numbered"),
                Rec::Data(i) => node_count + DATA_SECTION_SEPARATOR + value_offsets[i],
            };
            v as u32
        };
        for &n in &order.nodes {
            let [left, right] = tree.nodes[n];
            let (l, r) = (record_value(left), record_value(right));
            match record_size {
                24 => {
                    out.extend_from_slice(&l.to_be_bytes()[1..]);
                    out.extend_from_slice(&r.to_be_bytes()[1..]);
                }
                28 => {
                    out.extend_from_slice(&l.to_be_bytes()[1..]);
                    out.push((((l >> 24) & 0x0F) << 4) as u8 | ((r >> 24) & 0x0F) as u8);
                    out.extend_from_slice(&r.to_be_bytes()[1..]);
                }
                _ => {
                    out.extend_from_slice(&l.to_be_bytes());
                    out.extend_from_slice(&r.to_be_bytes());
                }
            }
        }
        out.extend_from_slice(&[0; DATA_SECTION_SEPARATOR]);
        out.extend_from_slice(&data.buf);
        out.extend_from_slice(METADATA_MARKER);

        out.extend_from_slice(&encode_metadata(&maxminddb::Metadata {
            binary_format_major_version: 2,
            binary_format_minor_version: 0,
            build_epoch: self.build_epoch,
            database_type: self.database_type.clone(),
            description: self.description.clone(),
            ip_version: 6,
            languages: self.languages.clone(),
            node_count: node_count as u32,
            record_size,
        })?);
        Ok(out)
    }

    /// Serialises the database and writes it to `path`, replacing the file through a
    /// temporary sibling and a rename so that a reader never sees half a file.
    pub fn write_to(&self, path: &Path) -> Result<(), MmdbWriteError> {
        let bytes = self.to_bytes()?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let io_err = |source| MmdbWriteError::Write {
            path: path.to_owned(),
            source,
        };
        std::fs::write(&tmp, &bytes).map_err(io_err)?;
        std::fs::rename(&tmp, path).map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            io_err(source)
        })
    }
}

/// The CSV header that [`asn_db_from_csv`] expects.
pub const ASN_CSV_HEADER: &str = "network,asn,organization,country";

/// Builds an ASN database from CSV text.
///
/// Format: the first non-comment line is the header `network,asn,organization,country`;
/// then one network per line: a CIDR network (IPv4 or IPv6, no host bits set), the AS
/// number (digits, no `AS` prefix), the organisation name and an ISO 3166-1 alpha-2
/// country code (may be empty). Fields containing commas are double-quoted, with `""`
/// for a quote inside. Blank lines and lines starting with `#` are ignored. Nested
/// networks are allowed (the more specific wins); a repeated network is an error.
///
/// Each record has the GeoLite2-ASN shape `{autonomous_system_number (uint32),
/// autonomous_system_organization}` plus `{country: {iso_code}}` when a country is
/// given. The database type is `ipenrich-ASN` (MaxMind-compatible record shape, not a
/// MaxMind product).
pub fn asn_db_from_csv(csv: &str) -> Result<MmdbWriter, MmdbWriteError> {
    let mut writer = MmdbWriter::new("ipenrich-ASN");
    writer.set_description(
        "en",
        "ASN database built by ipenrich from CSV (GeoLite2-ASN record shape)",
    );
    let mut seen_header = false;
    for (index, raw) in csv.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let csv_err = |message: String| MmdbWriteError::Csv {
            line: line_no,
            message,
        };
        let fields = split_csv_line(line).map_err(|m| csv_err(m.to_owned()))?;
        if !seen_header {
            let header: Vec<&str> = fields.iter().map(|f| f.trim()).collect();
            if header.join(",") != ASN_CSV_HEADER {
                return Err(csv_err(format!("expected the header {ASN_CSV_HEADER:?}")));
            }
            seen_header = true;
            continue;
        }
        let [net, asn, org, country] = <[String; 4]>::try_from(fields)
            .map_err(|f| csv_err(format!("expected 4 fields, found {}", f.len())))?;
        let net: IpNet = net
            .trim()
            .parse()
            .map_err(|_| csv_err(format!("{:?} is not a cidr network", net.trim())))?;
        if net != net.trunc() {
            return Err(csv_err(format!(
                "{net} has host bits set; the network is {}",
                net.trunc()
            )));
        }
        let asn: u32 = asn
            .trim()
            .parse()
            .map_err(|_| csv_err(format!("{:?} is not an as number", asn.trim())))?;
        let org = org.trim();
        if org.is_empty() {
            return Err(csv_err("empty organization".to_owned()));
        }
        let country = country.trim();
        if !(country.is_empty()
            || country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(csv_err(format!(
                "{country:?} is not an iso 3166-1 alpha-2 code"
            )));
        }
        let mut record = vec![
            ("autonomous_system_number".to_owned(), MmdbValue::U32(asn)),
            (
                "autonomous_system_organization".to_owned(),
                MmdbValue::string(org),
            ),
        ];
        if !country.is_empty() {
            record.push((
                "country".to_owned(),
                MmdbValue::map([("iso_code", MmdbValue::string(country))]),
            ));
        }
        writer
            .insert(net, MmdbValue::Map(record))
            .map_err(|e| csv_err(e.to_string()))?;
    }
    if !seen_header {
        return Err(MmdbWriteError::Csv {
            line: 1,
            message: format!("missing the header {ASN_CSV_HEADER:?}"),
        });
    }
    Ok(writer)
}

/// Splits one CSV line into fields (RFC 4180 quoting, no embedded newlines).
fn split_csv_line(line: &str) -> Result<Vec<String>, &'static str> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    loop {
        // At the start of a field.
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("unterminated quoted field"),
                }
            }
            match chars.next() {
                None => {
                    fields.push(std::mem::take(&mut field));
                    return Ok(fields);
                }
                Some(',') => fields.push(std::mem::take(&mut field)),
                Some(_) => return Err("text after a closing quote"),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(std::mem::take(&mut field));
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err("quote inside an unquoted field"),
                    Some(c) => field.push(c),
                }
            }
            fields.push(std::mem::take(&mut field));
        }
    }
}

/// A record in the search tree while it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rec {
    Empty,
    /// Index into the writer's networks, in key order.
    Data(usize),
    /// Index into `Tree::nodes`.
    Node(usize),
}

/// The search tree: an arena of nodes, root at 0. After aliasing it is a DAG.
struct Tree {
    nodes: Vec<[Rec; 2]>,
}

/// Node numbers in file order.
struct Numbering {
    /// Arena indexes in file order.
    nodes: Vec<usize>,
    /// File number of each arena index, `None` when unreachable.
    number: Vec<Option<usize>>,
}

impl Numbering {
    fn len(&self) -> usize {
        self.nodes.len()
    }
}

fn bit(bits: u128, depth: u8) -> usize {
    ((bits >> (127 - depth)) & 1) as usize
}

impl Tree {
    /// Builds the tree from `(prefix length, bits)` keys sorted by prefix length, so
    /// that a more specific network always splits a less specific one.
    fn build(keys: impl Iterator<Item = (u8, u128)>) -> Tree {
        let mut tree = Tree {
            nodes: vec![[Rec::Empty; 2]],
        };
        for (value, (len, bits)) in keys.enumerate() {
            if len == 0 {
                tree.nodes[0] = [Rec::Data(value); 2];
                continue;
            }
            let (node, side) = tree.descend(bits, len);
            tree.nodes[node][side] = Rec::Data(value);
        }
        // The IPv4 subtree hangs at ::/96; ::ffff:0:0/96 points at the same record.
        let (v4_node, v4_side) = tree.descend(0, IPV4_DEPTH);
        let v4_root = tree.nodes[v4_node][v4_side];
        let (mapped_node, mapped_side) = tree.descend(IPV4_MAPPED, IPV4_DEPTH);
        tree.nodes[mapped_node][mapped_side] = v4_root;
        tree
    }

    /// Walks to the record at depth `len - 1` on the path of `bits`, creating nodes
    /// on the way (a data record on the path becomes a node whose both halves carry
    /// that data). Returns the node and the side (0 or 1) of the record.
    fn descend(&mut self, bits: u128, len: u8) -> (usize, usize) {
        let mut node = 0;
        for depth in 0..len - 1 {
            let side = bit(bits, depth);
            node = match self.nodes[node][side] {
                Rec::Node(next) => next,
                fill @ (Rec::Empty | Rec::Data(_)) => {
                    self.nodes.push([fill; 2]);
                    let next = self.nodes.len() - 1;
                    self.nodes[node][side] = Rec::Node(next);
                    next
                }
            };
        }
        (node, bit(bits, len - 1))
    }

    /// Numbers the reachable nodes breadth-first from the root; shared (aliased)
    /// nodes get one number.
    fn numbering(&self) -> Numbering {
        let mut number = vec![None; self.nodes.len()];
        let mut nodes = vec![0];
        number[0] = Some(0);
        let mut next = 0;
        while next < nodes.len() {
            for rec in self.nodes[nodes[next]] {
                if let Rec::Node(child) = rec {
                    if number[child].is_none() {
                        number[child] = Some(nodes.len());
                        nodes.push(child);
                    }
                }
            }
            next += 1;
        }
        Numbering { nodes, number }
    }
}

/// The data section under construction, with records and strings deduplicated.
#[derive(Default)]
struct DataSection {
    buf: Vec<u8>,
    /// Offset of the first copy of each record, keyed by its pointer-free encoding.
    records: HashMap<Vec<u8>, usize>,
    /// Offset of the first inline copy of each string.
    strings: HashMap<String, usize>,
}

impl DataSection {
    /// Adds a top-level record and returns its offset in the data section.
    fn add_record(&mut self, value: &MmdbValue) -> Result<usize, MmdbWriteError> {
        let mut plain = Vec::new();
        encode_plain(value, &mut plain)?;
        if let Some(&offset) = self.records.get(&plain) {
            return Ok(offset);
        }
        let offset = self.buf.len();
        self.encode(value)?;
        self.records.insert(plain, offset);
        Ok(offset)
    }

    fn encode(&mut self, value: &MmdbValue) -> Result<(), MmdbWriteError> {
        match value {
            MmdbValue::String(s) => self.encode_str(s),
            MmdbValue::Map(pairs) => {
                check_unique_keys(pairs)?;
                control(&mut self.buf, T_MAP, pairs.len(), "map")?;
                for (key, value) in pairs {
                    self.encode_str(key)?;
                    self.encode(value)?;
                }
                Ok(())
            }
            MmdbValue::Array(items) => {
                control(&mut self.buf, T_ARRAY, items.len(), "array")?;
                items.iter().try_for_each(|item| self.encode(item))
            }
            scalar => encode_plain(scalar, &mut self.buf),
        }
    }

    /// Writes a string inline the first time and as a pointer afterwards, when the
    /// pointer is shorter.
    fn encode_str(&mut self, s: &str) -> Result<(), MmdbWriteError> {
        if let Some(&offset) = self.strings.get(s) {
            let mut pointer = Vec::with_capacity(5);
            encode_pointer(offset, &mut pointer);
            if pointer.len() < control_len(s.len()) + s.len() {
                self.buf.extend_from_slice(&pointer);
                return Ok(());
            }
        } else {
            self.strings.insert(s.to_owned(), self.buf.len());
        }
        control(&mut self.buf, T_STRING, s.len(), "string")?;
        self.buf.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn check_unique_keys(pairs: &[(String, MmdbValue)]) -> Result<(), MmdbWriteError> {
    let mut keys = HashSet::with_capacity(pairs.len());
    for (key, _) in pairs {
        if !keys.insert(key.as_str()) {
            return Err(MmdbWriteError::DuplicateKey { key: key.clone() });
        }
    }
    Ok(())
}

/// Encodes a metadata section, the part of the file after the metadata marker.
/// The metadata is decoded relative to its own start, so it holds no pointers.
pub fn encode_metadata(metadata: &maxminddb::Metadata) -> Result<Vec<u8>, MmdbWriteError> {
    let value = MmdbValue::Map(vec![
        (
            "binary_format_major_version".into(),
            MmdbValue::U16(metadata.binary_format_major_version),
        ),
        (
            "binary_format_minor_version".into(),
            MmdbValue::U16(metadata.binary_format_minor_version),
        ),
        ("build_epoch".into(), MmdbValue::U64(metadata.build_epoch)),
        (
            "database_type".into(),
            MmdbValue::String(metadata.database_type.clone()),
        ),
        (
            "description".into(),
            MmdbValue::Map(
                metadata
                    .description
                    .iter()
                    .map(|(k, v)| (k.clone(), MmdbValue::String(v.clone())))
                    .collect(),
            ),
        ),
        ("ip_version".into(), MmdbValue::U16(metadata.ip_version)),
        (
            "languages".into(),
            MmdbValue::Array(
                metadata
                    .languages
                    .iter()
                    .map(|l| MmdbValue::String(l.clone()))
                    .collect(),
            ),
        ),
        ("node_count".into(), MmdbValue::U32(metadata.node_count)),
        ("record_size".into(), MmdbValue::U16(metadata.record_size)),
    ]);
    let mut out = Vec::new();
    encode_plain(&value, &mut out)?;
    Ok(out)
}

/// Encodes a value without pointers.
fn encode_plain(value: &MmdbValue, out: &mut Vec<u8>) -> Result<(), MmdbWriteError> {
    match value {
        MmdbValue::Map(pairs) => {
            check_unique_keys(pairs)?;
            control(out, T_MAP, pairs.len(), "map")?;
            for (key, value) in pairs {
                control(out, T_STRING, key.len(), "string")?;
                out.extend_from_slice(key.as_bytes());
                encode_plain(value, out)?;
            }
        }
        MmdbValue::Array(items) => {
            control(out, T_ARRAY, items.len(), "array")?;
            for item in items {
                encode_plain(item, out)?;
            }
        }
        MmdbValue::String(s) => {
            control(out, T_STRING, s.len(), "string")?;
            out.extend_from_slice(s.as_bytes());
        }
        MmdbValue::U16(v) => encode_uint(out, T_UINT16, u64::from(*v)),
        MmdbValue::U32(v) => encode_uint(out, T_UINT32, u64::from(*v)),
        MmdbValue::U64(v) => encode_uint(out, T_UINT64, *v),
        MmdbValue::Double(v) => {
            control(out, T_DOUBLE, 8, "double")?;
            out.extend_from_slice(&v.to_be_bytes());
        }
        MmdbValue::Bool(v) => control(out, T_BOOL, usize::from(*v), "boolean")?,
    }
    Ok(())
}

/// Unsigned integers are big-endian with leading zero bytes dropped; 0 has no bytes.
fn encode_uint(out: &mut Vec<u8>, type_num: u8, v: u64) {
    let len = (64 - v.leading_zeros() as usize).div_ceil(8);
    control(out, type_num, len, "integer").expect("at most 8 bytes");
    out.extend_from_slice(&v.to_be_bytes()[8 - len..]);
}

/// Bytes that the control byte and size extension take for a payload of `size`.
fn control_len(size: usize) -> usize {
    match size {
        0..29 => 1,
        29..285 => 2,
        285..65_821 => 3,
        _ => 4,
    }
}

/// Writes a control byte (plus the extended type byte for types above 7) and the
/// size extension bytes.
fn control(
    out: &mut Vec<u8>,
    type_num: u8,
    size: usize,
    what: &'static str,
) -> Result<(), MmdbWriteError> {
    if size > MAX_SIZE {
        return Err(MmdbWriteError::ValueTooLarge { what, len: size });
    }
    let (size_bits, extra): (u8, Vec<u8>) = match size {
        0..29 => (size as u8, vec![]),
        29..285 => (29, vec![(size - 29) as u8]),
        285..65_821 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec()),
    };
    if type_num <= 7 {
        out.push(type_num << 5 | size_bits);
    } else {
        out.push(size_bits);
        out.push(type_num - 7);
    }
    out.extend_from_slice(&extra);
    Ok(())
}

/// Writes a pointer to `offset` in the data section (spec: "Pointer - 1").
fn encode_pointer(offset: usize, out: &mut Vec<u8>) {
    let ctrl = T_POINTER << 5;
    if offset < 1 << 11 {
        out.push(ctrl | (offset >> 8) as u8);
        out.push(offset as u8);
    } else if offset < (1 << 19) + 2048 {
        let v = offset - 2048;
        out.push(ctrl | 1 << 3 | (v >> 16) as u8);
        out.extend_from_slice(&(v as u32).to_be_bytes()[2..]);
    } else if offset < (1 << 27) + 526_336 {
        let v = offset - 526_336;
        out.push(ctrl | 2 << 3 | (v >> 24) as u8);
        out.extend_from_slice(&(v as u32).to_be_bytes()[1..]);
    } else {
        out.push(ctrl | 3 << 3);
        out.extend_from_slice(&(offset as u32).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use maxminddb::Reader;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn asn(number: u32, org: &str) -> MmdbValue {
        MmdbValue::map([
            ("autonomous_system_number", MmdbValue::U32(number)),
            ("autonomous_system_organization", MmdbValue::string(org)),
        ])
    }

    fn reader(writer: &MmdbWriter) -> Reader<Vec<u8>> {
        let reader = Reader::from_source(writer.to_bytes().unwrap()).unwrap();
        reader.verify().unwrap();
        reader
    }

    /// The record for `addr` as JSON, `None` when the database has no data.
    fn get(reader: &Reader<Vec<u8>>, addr: &str) -> Option<Value> {
        reader.lookup(ip(addr)).unwrap().decode::<Value>().unwrap()
    }

    fn asn_of(reader: &Reader<Vec<u8>>, addr: &str) -> Option<u64> {
        get(reader, addr).map(|v| v["autonomous_system_number"].as_u64().unwrap())
    }

    #[test]
    fn ipv4_and_ipv6_round_trip_and_unknown_addresses_have_no_data() {
        let mut w = MmdbWriter::new("Test-ASN");
        w.insert(net("8.8.8.0/24"), asn(15169, "Google LLC"))
            .unwrap();
        w.insert(net("2606:4700::/32"), asn(13335, "Cloudflare, Inc."))
            .unwrap();
        let r = reader(&w);

        assert_eq!(
            get(&r, "8.8.8.8"),
            Some(
                json!({"autonomous_system_number": 15169, "autonomous_system_organization": "Google LLC"})
            )
        );
        assert_eq!(asn_of(&r, "8.8.8.0"), Some(15169));
        assert_eq!(asn_of(&r, "8.8.8.255"), Some(15169));
        assert_eq!(asn_of(&r, "2606:4700::1111"), Some(13335));
        assert_eq!(asn_of(&r, "2606:4700:ffff::1"), Some(13335));
        for unknown in [
            "8.8.9.0",
            "8.8.7.255",
            "0.0.0.0",
            "255.255.255.255",
            "2606:4701::1",
            "::1",
        ] {
            assert_eq!(get(&r, unknown), None, "{unknown}");
        }
        let found = r.lookup(ip("8.8.8.8")).unwrap();
        assert_eq!(found.network().unwrap().to_string(), "8.8.8.0/24");
        let found = r.lookup(ip("2606:4700::1")).unwrap();
        assert_eq!(found.network().unwrap().to_string(), "2606:4700::/32");

        let m = r.metadata();
        assert_eq!(m.database_type, "Test-ASN");
        assert_eq!(m.ip_version, 6);
        assert_eq!(m.binary_format_major_version, 2);
        assert_eq!(m.binary_format_minor_version, 0);
        assert_eq!(m.build_epoch, 0);
        assert_eq!(m.languages, vec!["en"]);
        assert_eq!(m.record_size, 24);
    }

    #[test]
    fn ipv4_is_reachable_at_96_zero_bits_and_through_the_mapped_alias() {
        let mut w = MmdbWriter::new("Test");
        w.insert(net("1.1.1.0/24"), asn(13335, "Cloudflare, Inc."))
            .unwrap();
        let r = reader(&w);
        let v4 = Ipv4Addr::new(1, 1, 1, 1);
        let compat = Ipv6Addr::from(u128::from(u32::from(v4)));
        assert_eq!(asn_of(&r, &compat.to_string()), Some(13335));
        assert_eq!(asn_of(&r, &v4.to_ipv6_mapped().to_string()), Some(13335));
        assert_eq!(asn_of(&r, "::ffff:1.1.2.1"), None);
        assert_eq!(asn_of(&r, "::fffe:1.1.1.1"), None);
    }

    #[test]
    fn more_specific_networks_win_whatever_the_insertion_order() {
        let nets = [
            ("10.0.0.0/8", 1),
            ("10.1.0.0/16", 2),
            ("10.1.2.0/24", 3),
            ("10.1.2.128/25", 4),
            ("2001:db8::/32", 5),
            ("2001:db8:1::/48", 6),
        ];
        let mut forward = MmdbWriter::new("Test");
        for (n, a) in nets {
            forward.insert(net(n), asn(a, "x")).unwrap();
        }
        let mut backward = MmdbWriter::new("Test");
        for (n, a) in nets.iter().rev() {
            backward.insert(net(n), asn(*a, "x")).unwrap();
        }
        assert_eq!(forward.to_bytes().unwrap(), backward.to_bytes().unwrap());

        let r = reader(&forward);
        let cases = [
            ("10.200.0.1", Some(1)),
            ("10.1.200.1", Some(2)),
            ("10.1.2.1", Some(3)),
            ("10.1.2.200", Some(4)),
            ("11.0.0.0", None),
            ("2001:db8:2::1", Some(5)),
            ("2001:db8:1::1", Some(6)),
        ];
        for (addr, want) in cases {
            assert_eq!(asn_of(&r, addr), want, "{addr}");
        }
        let hit = r.lookup(ip("10.1.2.1")).unwrap();
        assert_eq!(hit.network().unwrap().to_string(), "10.1.2.0/25");
    }

    #[test]
    fn ipv6_default_route_covers_what_no_ipv4_network_covers() {
        let mut w = MmdbWriter::new("Test");
        w.insert(net("::/0"), asn(1, "default")).unwrap();
        w.insert(net("192.0.2.0/24"), asn(2, "doc")).unwrap();
        let r = reader(&w);
        assert_eq!(asn_of(&r, "2001:db8::1"), Some(1));
        assert_eq!(asn_of(&r, "192.0.2.1"), Some(2));
        assert_eq!(asn_of(&r, "::ffff:192.0.2.1"), Some(2));
        assert_eq!(asn_of(&r, "198.51.100.1"), Some(1));
    }

    #[test]
    fn every_value_type_round_trips() {
        let value = MmdbValue::map([
            ("string", MmdbValue::string("zürich ☃")),
            ("empty", MmdbValue::string("")),
            ("u16", MmdbValue::U16(65_535)),
            ("u16_zero", MmdbValue::U16(0)),
            ("u32", MmdbValue::U32(4_294_967_295)),
            ("u32_small", MmdbValue::U32(300)),
            ("u64", MmdbValue::U64(u64::MAX)),
            ("double", MmdbValue::Double(-33.8688)),
            ("true", MmdbValue::Bool(true)),
            ("false", MmdbValue::Bool(false)),
            (
                "array",
                MmdbValue::Array(vec![
                    MmdbValue::U32(1),
                    MmdbValue::string("two"),
                    MmdbValue::map([("three", MmdbValue::Double(3.5))]),
                ]),
            ),
            ("empty_map", MmdbValue::Map(vec![])),
            ("empty_array", MmdbValue::Array(vec![])),
        ]);
        let mut w = MmdbWriter::new("Test");
        w.insert(net("203.0.113.0/24"), value).unwrap();
        let r = reader(&w);
        assert_eq!(
            get(&r, "203.0.113.9"),
            Some(json!({
                "string": "zürich ☃", "empty": "", "u16": 65535, "u16_zero": 0,
                "u32": 4294967295_u64, "u32_small": 300, "u64": u64::MAX,
                "double": -33.8688, "true": true, "false": false,
                "array": [1, "two", {"three": 3.5}], "empty_map": {}, "empty_array": [],
            }))
        );
    }

    #[test]
    fn long_strings_and_far_pointers_round_trip() {
        // Payload sizes on both sides of each size-field boundary, and enough data that
        // repeated strings are reached through 2-, 3- and 4-byte pointers.
        let lengths = [28, 29, 30, 284, 285, 286, 65_820, 65_821, 65_822, 70_000];
        let mut w = MmdbWriter::new("Test");
        // Filler, written first (lower addresses): each record introduces a key at a
        // growing offset, from ~70 KB (3-byte pointers) to ~630 KB (4-byte pointers).
        let tags: Vec<String> = (0..9).map(|i| format!("tag-key-{i}")).collect();
        for (i, tag) in tags.iter().enumerate() {
            let pad: String = (0..70_000)
                .map(|j| (b'A' + ((j + i) % 26) as u8) as char)
                .collect();
            let value = MmdbValue::map([("pad", MmdbValue::String(pad)), (tag, MmdbValue::U16(1))]);
            let n = IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::new(9, 0, 0, i as u8), 32).unwrap());
            w.insert(n, value).unwrap();
        }
        let mut expected = Vec::new();
        let mut addr = 0x0a00_0000_u32;
        for round in 0..10 {
            for (i, &len) in lengths.iter().enumerate() {
                let s: String = (0..len)
                    .map(|j| (b'a' + ((j + i) % 26) as u8) as char)
                    .collect();
                let mut pairs = vec![
                    ("text".to_owned(), MmdbValue::String(s.clone())),
                    ("round".to_owned(), MmdbValue::U16(round)),
                ];
                pairs.extend(tags.iter().map(|t| (t.clone(), MmdbValue::U16(round))));
                let value = MmdbValue::Map(pairs);
                let n = IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(addr), 32).unwrap());
                w.insert(n, value).unwrap();
                expected.push((Ipv4Addr::from(addr), s, round));
                addr += 1;
            }
        }
        let bytes = w.to_bytes().unwrap();
        assert!(
            bytes.len() > 526_336 + 70_000,
            "data must need 4-byte pointers"
        );
        // Pointers keep the repeated keys and texts small: far less than 10 copies.
        assert!(bytes.len() < 9 * 70_000 + 2 * 300_000, "{}", bytes.len());
        let r = Reader::from_source(bytes).unwrap();
        r.verify().unwrap();
        for (a, s, round) in expected {
            let got = get(&r, &a.to_string()).unwrap();
            assert_eq!(got["text"].as_str().unwrap(), s);
            assert_eq!(got["round"], json!(round));
            assert_eq!(got["tag-key-0"], json!(round));
            assert_eq!(got["tag-key-8"], json!(round));
        }
    }

    #[test]
    fn pointer_encoding_matches_the_spec_layout() {
        // Spec: size 0 -> 11 bits; 1 -> 19 bits + 2048; 2 -> 27 bits + 526336; 3 -> 32 bits.
        let decode = |b: &[u8]| -> usize {
            let size = (b[0] >> 3) & 3;
            let top = usize::from(b[0] & 7);
            let rest = b[1..]
                .iter()
                .fold(0_usize, |acc, &x| acc << 8 | usize::from(x));
            match size {
                0 => top << 8 | rest,
                1 => (top << 16 | rest) + 2048,
                2 => (top << 24 | rest) + 526_336,
                _ => rest,
            }
        };
        for (offset, len) in [
            (0, 2),
            (2047, 2),
            (2048, 3),
            (526_335, 3),
            (526_336, 4),
            (134_744_063, 4),
            (134_744_064, 5),
            (u32::MAX as usize, 5),
        ] {
            let mut out = Vec::new();
            encode_pointer(offset, &mut out);
            assert_eq!(out.len(), len, "{offset}");
            assert_eq!(out[0] >> 5, T_POINTER);
            assert_eq!(decode(&out), offset, "{offset}");
        }
    }

    #[test]
    fn all_record_sizes_give_the_same_answers() {
        let mut answers = Vec::new();
        for bits in [24, 28, 32] {
            let mut w = asn_db_from_csv(&demo_csv()).unwrap();
            w.set_record_size(bits).unwrap();
            let r = reader(&w);
            assert_eq!(r.metadata().record_size, bits);
            let probe: Vec<_> = [
                "8.8.8.8",
                "8.1.2.3",
                "185.220.101.7",
                "2a01:4f8::1",
                "192.0.2.1",
            ]
            .iter()
            .map(|a| get(&r, a))
            .collect();
            answers.push(probe);
        }
        assert_eq!(answers[0], answers[1]);
        assert_eq!(answers[0], answers[2]);
        assert!(answers[0][4].is_none());
    }

    #[test]
    fn twenty_eight_bit_records_carry_the_high_nibbles() {
        // Enough distinct data that record values pass 2^24 and need the shared nibble.
        let mut w = MmdbWriter::new("Test");
        let big = "x".repeat(1 << 16);
        for i in 0..300_u32 {
            let value = MmdbValue::map([
                ("n", MmdbValue::U32(i)),
                ("pad", MmdbValue::String(format!("{i}{big}"))),
            ]);
            let n =
                IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0x0b00_0000 + (i << 8)), 24).unwrap());
            w.insert(n, value).unwrap();
        }
        let r = reader(&w);
        assert_eq!(r.metadata().record_size, 28);
        for i in [0_u32, 1, 150, 299] {
            let a = Ipv4Addr::from(0x0b00_0000 + (i << 8) + 7);
            assert_eq!(get(&r, &a.to_string()).unwrap()["n"], json!(i));
        }
        let mut too_small = w.clone();
        too_small.set_record_size(24).unwrap();
        assert!(matches!(
            too_small.to_bytes(),
            Err(MmdbWriteError::TooLarge { .. })
        ));
    }

    #[test]
    fn identical_records_are_stored_once() {
        let mut one = MmdbWriter::new("Test");
        one.insert(net("10.0.0.0/24"), asn(64_500, "Example Org"))
            .unwrap();
        let mut many = one.clone();
        for i in 1..50_u32 {
            let n =
                IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap());
            many.insert(n, asn(64_500, "Example Org")).unwrap();
        }
        let data_len = |w: &MmdbWriter| {
            let r = reader(w);
            let bytes = w.to_bytes().unwrap();
            let m = r.metadata();
            let tree = m.node_count as usize * usize::from(m.record_size) / 4;
            bytes.len() - tree - 16
        };
        assert_eq!(data_len(&one), data_len(&many));
    }

    #[test]
    fn empty_database_is_valid_and_knows_nothing() {
        let r = reader(&MmdbWriter::new("Empty"));
        assert_eq!(get(&r, "1.2.3.4"), None);
        assert_eq!(get(&r, "2001:db8::1"), None);
    }

    #[test]
    fn build_epoch_and_description_reach_the_metadata() {
        let mut w = MmdbWriter::new("Test");
        w.set_build_epoch(1_700_000_000)
            .set_description("de", "Testdaten")
            .set_languages(&["en", "de"]);
        let r = reader(&w);
        assert_eq!(r.metadata().build_epoch, 1_700_000_000);
        assert_eq!(r.metadata().description["de"], "Testdaten");
        assert_eq!(r.metadata().languages, vec!["en", "de"]);
    }

    #[test]
    fn insert_refuses_duplicates_and_the_ipv4_ranges() {
        let mut w = MmdbWriter::new("Test");
        w.insert(net("10.0.0.0/8"), asn(1, "a")).unwrap();
        let dup = w.insert(net("10.1.2.3/8"), asn(2, "b")).unwrap_err();
        assert!(
            matches!(dup, MmdbWriteError::DuplicateNetwork { .. }),
            "{dup}"
        );
        assert_eq!(dup.to_string(), "network 10.0.0.0/8 is inserted twice");
        for bad in [
            "::/96",
            "::a00:0/104",
            "::ffff:0:0/96",
            "::ffff:10.0.0.0/104",
        ] {
            let err = w.insert(net(bad), asn(3, "c")).unwrap_err();
            assert!(
                matches!(err, MmdbWriteError::Ipv4Range { .. }),
                "{bad}: {err}"
            );
        }
        assert!(w.insert(net("::/95"), asn(4, "d")).is_ok());
        assert!(matches!(
            w.set_record_size(26),
            Err(MmdbWriteError::RecordSize(26))
        ));
    }

    #[test]
    fn duplicate_map_keys_are_refused() {
        let mut w = MmdbWriter::new("Test");
        let value = MmdbValue::map([("k", MmdbValue::U16(1)), ("k", MmdbValue::U16(2))]);
        w.insert(net("10.0.0.0/8"), value).unwrap();
        let err = w.to_bytes().unwrap_err();
        assert!(
            matches!(err, MmdbWriteError::DuplicateKey { ref key } if key == "k"),
            "{err}"
        );
    }

    #[test]
    fn csv_builds_the_asn_record_shape() {
        let csv = "# comment\n\nnetwork,asn,organization,country\n\
                   52.0.0.0/11,16509,\"Amazon.com, Inc.\",US\n\
                   2001:db8::/32,64500,\"Say \"\"hi\"\"\",\n";
        let r = reader(&asn_db_from_csv(csv).unwrap());
        assert_eq!(r.metadata().database_type, "ipenrich-ASN");
        assert_eq!(
            get(&r, "52.1.2.3"),
            Some(json!({
                "autonomous_system_number": 16509,
                "autonomous_system_organization": "Amazon.com, Inc.",
                "country": {"iso_code": "US"},
            }))
        );
        assert_eq!(
            get(&r, "2001:db8::5"),
            Some(
                json!({"autonomous_system_number": 64500, "autonomous_system_organization": "Say \"hi\""})
            )
        );
    }

    #[test]
    fn csv_errors_name_the_line() {
        let cases = [
            ("8.8.8.0/24,15169,Google LLC,US\n", 1, "expected the header"),
            (
                "network,asn,organization,country\n8.8.8.0/24,15169,Google LLC\n",
                2,
                "expected 4 fields",
            ),
            (
                "network,asn,organization,country\n#\n8.8.8.1/24,15169,G,US\n",
                3,
                "host bits set",
            ),
            (
                "network,asn,organization,country\nfoo,1,G,US\n",
                2,
                "not a cidr network",
            ),
            (
                "network,asn,organization,country\n8.8.8.0/24,AS15169,G,US\n",
                2,
                "not an as number",
            ),
            (
                "network,asn,organization,country\n8.8.8.0/24,1,,US\n",
                2,
                "empty organization",
            ),
            (
                "network,asn,organization,country\n8.8.8.0/24,1,G,usa\n",
                2,
                "iso 3166-1",
            ),
            (
                "network,asn,organization,country\n8.8.8.0/24,1,\"G,US\n",
                2,
                "unterminated",
            ),
            (
                "network,asn,organization,country\n8.8.8.0/24,1,G,US\n8.8.8.0/24,2,H,US\n",
                3,
                "inserted twice",
            ),
            ("# only a comment\n", 1, "missing the header"),
        ];
        for (csv, line, needle) in cases {
            match asn_db_from_csv(csv) {
                Err(MmdbWriteError::Csv { line: got, message }) => {
                    assert_eq!(got, line, "{csv:?}: {message}");
                    assert!(message.contains(needle), "{csv:?}: {message}");
                }
                other => panic!("{csv:?}: {other:?}"),
            }
        }
    }

    fn demo_path(ext: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("samples/demo-asn.{ext}"))
    }

    fn demo_csv() -> String {
        std::fs::read_to_string(demo_path("csv")).unwrap()
    }

    /// A stale `samples/demo-asn.mmdb` fails here. To regenerate it after editing the
    /// CSV, run `IPENRICH_BLESS=1 cargo test --lib demo_mmdb_matches_csv`.
    #[test]
    fn demo_mmdb_matches_csv() {
        let built = asn_db_from_csv(&demo_csv()).unwrap().to_bytes().unwrap();
        if std::env::var_os("IPENRICH_BLESS").is_some() {
            std::fs::write(demo_path("mmdb"), &built).unwrap();
        }
        let committed = std::fs::read(demo_path("mmdb")).unwrap();
        assert!(
            committed == built,
            "samples/demo-asn.mmdb is stale; run IPENRICH_BLESS=1 cargo test --lib demo_mmdb_matches_csv"
        );
        let r = Reader::from_source(committed).unwrap();
        r.verify().unwrap();
        assert_eq!(asn_of(&r, "8.8.8.8"), Some(15169));
        assert_eq!(asn_of(&r, "8.9.9.9"), Some(3356));
        assert_eq!(asn_of(&r, "185.220.101.33"), Some(60729));
        assert_eq!(asn_of(&r, "2a01:4f8:c17::1"), Some(24940));
        assert_eq!(asn_of(&r, "10.0.0.1"), None);
    }

    #[test]
    fn write_to_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.mmdb");
        let mut w = MmdbWriter::new("Test");
        w.insert(net("10.0.0.0/8"), asn(1, "a")).unwrap();
        w.write_to(&path).unwrap();
        w.insert(net("11.0.0.0/8"), asn(2, "b")).unwrap();
        w.write_to(&path).unwrap();
        let r = Reader::open_readfile(&path).unwrap();
        assert_eq!(asn_of(&r, "11.1.1.1"), Some(2));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let err = w.write_to(&dir.path().join("missing/x.mmdb")).unwrap_err();
        assert!(err.to_string().contains("missing/x.mmdb"), "{err}");
    }

    proptest! {
        #[test]
        fn random_disjoint_slash24s_round_trip(
            nets in proptest::collection::btree_map(any::<u32>().prop_map(|a| a >> 8), 1..=u32::MAX, 1..200),
            bits in prop_oneof![Just(24_u16), Just(28), Just(32)],
        ) {
            let mut w = MmdbWriter::new("Test");
            w.set_record_size(bits).unwrap();
            for (&prefix, &a) in &nets {
                let n = IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(prefix << 8), 24).unwrap());
                w.insert(n, asn(a, &format!("AS{a}"))).unwrap();
            }
            let r = reader(&w);
            for (&prefix, &a) in &nets {
                for host in [0_u32, 77, 255] {
                    let addr = Ipv4Addr::from(prefix << 8 | host);
                    prop_assert_eq!(asn_of(&r, &addr.to_string()), Some(u64::from(a)));
                    prop_assert_eq!(asn_of(&r, &addr.to_ipv6_mapped().to_string()), Some(u64::from(a)));
                }
                let next = prefix.wrapping_add(1) & 0x00ff_ffff;
                if !nets.contains_key(&next) {
                    let addr = Ipv4Addr::from(next << 8 | 1);
                    prop_assert_eq!(asn_of(&r, &addr.to_string()), None);
                }
            }
        }
    }
}
