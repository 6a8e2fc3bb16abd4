//! Patching a JSON object in its raw text: every member is copied exactly as it was
//! read, except where a patch adds to it or replaces it. A value is opened only along
//! the path a patch follows, and then one level at a time, so a value serde_json
//! cannot represent (`1e400`, a lone surrogate escape) anywhere in the event passes
//! through untouched, and nothing that is not an object is ever written over: where
//! a patch meets such a value, [`blocked`] names it and the caller drops that part.
//! The patch never writes an empty object or array.

use std::borrow::Cow;
use std::net::IpAddr;

use serde_json::value::RawValue;

use crate::event::{node, Node};

/// The members of a JSON object: keys and raw values, in document order.
pub type Members<'a> = [(Cow<'a, str>, &'a RawValue)];

/// What a patch does at one key.
#[derive(Debug, Clone, PartialEq)]
pub enum Patch {
    /// An object with these keys: created when absent, merged into when an object is
    /// there; a value that is not an object blocks it.
    Object(Vec<(String, Patch)>),
    /// JSON text set when the key is absent; a value that is there is kept.
    Missing(String),
    /// JSON text set in place of whatever is there.
    Replace(String),
    /// Addresses added to the array there (a lone string becomes an array), each
    /// unless an equal address is there already; any other value blocks it.
    Union(Vec<IpAddr>),
    /// JSON objects (as text) appended to the array there; any other value blocks it.
    Append(Vec<String>),
}

impl Patch {
    /// True when applying it would add nothing.
    fn is_empty(&self) -> bool {
        match self {
            Patch::Object(keys) => keys.iter().all(|(_, p)| p.is_empty()),
            Patch::Union(ips) => ips.is_empty(),
            Patch::Append(items) => items.is_empty(),
            Patch::Missing(_) | Patch::Replace(_) => false,
        }
    }
}

/// Puts `leaf` at the dotted `path` of `patch`, creating objects on the way. A path
/// through a patch that is not an object is left alone (config validation keeps
/// `output.field` off the ECS keys, so this does not happen).
pub fn insert(patch: &mut Vec<(String, Patch)>, path: &[&str], leaf: Patch) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let at = match patch.iter().position(|(k, _)| k == first) {
        Some(i) => i,
        None => {
            patch.push((first.to_string(), Patch::Object(Vec::new())));
            patch.len() - 1
        }
    };
    if rest.is_empty() {
        patch[at].1 = leaf;
    } else if let Patch::Object(inner) = &mut patch[at].1 {
        insert(inner, rest, leaf);
    }
}

/// Removes what `patch` holds at the dotted `path`, and objects left empty by it.
pub fn remove(patch: &mut Vec<(String, Patch)>, path: &[&str]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(at) = patch.iter().position(|(k, _)| k == first) else {
        return;
    };
    if !rest.is_empty() {
        if let Patch::Object(inner) = &mut patch[at].1 {
            remove(inner, rest);
        }
    }
    if rest.is_empty() || patch[at].1.is_empty() {
        patch.remove(at);
    }
}

/// The raw value at a dotted path of an object, if every step is an object
/// (first occurrence of a key, as everywhere in the merge).
pub fn get<'a>(members: &Members<'a>, path: &[&str]) -> Option<&'a RawValue> {
    let (first, rest) = path.split_first()?;
    let raw = members.iter().find(|(k, _)| k == first)?.1;
    if rest.is_empty() {
        return Some(raw);
    }
    match node(raw) {
        Node::Object(inner) => get(&inner, rest),
        _ => None,
    }
}

/// The dotted paths (under `prefix`) where `patch` meets a value it must not write
/// over: a non-object where an object is patched, a non-array where addresses or
/// objects are added.
pub fn blocked(members: &Members<'_>, patch: &[(String, Patch)], prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (key, p) in patch {
        let Some((_, raw)) = members.iter().find(|(k, _)| k == key) else {
            continue;
        };
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (p, node(raw)) {
            (Patch::Object(inner), Node::Object(m)) => out.extend(blocked(&m, inner, &path)),
            (Patch::Union(_), Node::Array(_) | Node::String(_)) => {}
            (Patch::Append(_), Node::Array(_)) => {}
            (Patch::Missing(_) | Patch::Replace(_), _) => {}
            _ => out.push(path),
        }
    }
    out
}

/// Writes the object `members` with `patch` applied. Existing members keep their
/// order and text; new keys follow in patch order. A later duplicate of a patched
/// key is dropped, so the output has each patched key once.
pub fn write_object(out: &mut Vec<u8>, members: &Members<'_>, patch: &[(String, Patch)]) {
    out.push(b'{');
    let mut first = true;
    let mut done: Vec<&str> = Vec::new();
    for (key, raw) in members {
        let key = key.as_ref();
        let p = patch.iter().find(|(k, _)| k == key).map(|(_, p)| p);
        if p.is_some() && done.contains(&key) {
            continue;
        }
        comma(out, &mut first);
        write_key(out, key);
        match p {
            Some(p) => {
                write_patched(out, raw, p);
                done.push(key);
            }
            None => out.extend_from_slice(raw.get().as_bytes()),
        }
    }
    for (key, p) in patch {
        if done.contains(&key.as_str()) || p.is_empty() {
            continue;
        }
        comma(out, &mut first);
        write_key(out, key);
        write_fresh(out, p);
    }
    out.push(b'}');
}

/// `p` applied to a value that is there. Where it is blocked the value is kept.
fn write_patched(out: &mut Vec<u8>, raw: &RawValue, p: &Patch) {
    match (p, node(raw)) {
        (Patch::Object(inner), Node::Object(m)) => write_object(out, &m, inner),
        (Patch::Replace(text), _) => out.extend_from_slice(text.as_bytes()),
        (Patch::Union(ips), Node::Array(items)) => {
            let have: Vec<Option<IpAddr>> = items.iter().map(|i| address(i)).collect();
            let new = ips.iter().filter(|ip| !have.contains(&Some(**ip)));
            write_array(out, items.iter().map(|i| i.get().to_string()), new);
        }
        (Patch::Union(ips), Node::String(_)) => {
            let have = address(raw);
            let new = ips.iter().filter(|ip| have != Some(**ip));
            write_array(out, std::iter::once(raw.get().to_string()), new);
        }
        (Patch::Append(add), Node::Array(items)) => {
            let old = items.iter().map(|i| i.get().to_string());
            write_array(out, old.chain(add.iter().cloned()), std::iter::empty());
        }
        _ => out.extend_from_slice(raw.get().as_bytes()),
    }
}

/// `p` where nothing is.
fn write_fresh(out: &mut Vec<u8>, p: &Patch) {
    match p {
        Patch::Object(inner) => write_object(out, &[], inner),
        Patch::Missing(text) | Patch::Replace(text) => out.extend_from_slice(text.as_bytes()),
        Patch::Union(ips) => write_array(out, std::iter::empty(), ips.iter()),
        Patch::Append(items) => write_array(out, items.iter().cloned(), std::iter::empty()),
    }
}

/// `[` the JSON texts `items`, then the addresses `ips` as strings `]`.
fn write_array<'i>(
    out: &mut Vec<u8>,
    items: impl Iterator<Item = String>,
    ips: impl Iterator<Item = &'i IpAddr>,
) {
    out.push(b'[');
    let mut first = true;
    for item in items {
        comma(out, &mut first);
        out.extend_from_slice(item.as_bytes());
    }
    for ip in ips {
        comma(out, &mut first);
        // Addresses are plain ASCII: no escaping needed.
        out.push(b'"');
        out.extend_from_slice(ip.to_string().as_bytes());
        out.push(b'"');
    }
    out.push(b']');
}

/// The address a JSON string holds, canonical (IPv4-mapped IPv6 as IPv4).
pub fn address(raw: &RawValue) -> Option<IpAddr> {
    match node(raw) {
        Node::String(s) => s.trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical()),
        _ => None,
    }
}

fn comma(out: &mut Vec<u8>, first: &mut bool) {
    if !*first {
        out.push(b',');
    }
    *first = false;
}

/// A key, escaped, and the colon.
pub fn write_key(out: &mut Vec<u8>, key: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, key);
    out.push(b':');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(text: &str) -> Vec<(Cow<'_, str>, &RawValue)> {
        match node(serde_json::from_str::<&RawValue>(text).unwrap()) {
            Node::Object(m) => m,
            _ => panic!("not an object: {text}"),
        }
    }

    fn apply(text: &str, patch: &[(String, Patch)]) -> String {
        let mut out = Vec::new();
        write_object(&mut out, &members(text), patch);
        String::from_utf8(out).unwrap()
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn objects_are_created_where_missing_and_merged_where_present() {
        let mut p = Vec::new();
        insert(&mut p, &["a", "b", "c"], Patch::Missing("1".into()));
        insert(&mut p, &["a", "d"], Patch::Replace("2".into()));
        assert_eq!(
            apply(r#"{"x":1e400}"#, &p),
            r#"{"x":1e400,"a":{"b":{"c":1},"d":2}}"#
        );
        assert_eq!(
            apply(r#"{"a":{"b":{"c":"kept"},"d":"old","z":"\ud800"}}"#, &p),
            r#"{"a":{"b":{"c":"kept"},"d":2,"z":"\ud800"}}"#
        );
    }

    #[test]
    fn a_value_that_is_not_an_object_is_never_written_over() {
        let mut p = Vec::new();
        insert(
            &mut p,
            &["source", "as", "number"],
            Patch::Missing("1".into()),
        );
        insert(&mut p, &["related", "ip"], Patch::Union(ips(&["8.8.8.8"])));
        let doc = r#"{"source":"pan:traffic","related":{"ip":7}}"#;
        assert_eq!(blocked(&members(doc), &p, ""), ["source", "related.ip"]);
        assert_eq!(apply(doc, &p), doc, "kept as it was");
        remove(&mut p, &["source"]);
        remove(&mut p, &["related", "ip"]);
        assert!(p.is_empty(), "emptied objects go too: {p:?}");
    }

    #[test]
    fn addresses_join_an_array_or_a_lone_string_once() {
        let mut p = Vec::new();
        insert(
            &mut p,
            &["ip"],
            Patch::Union(ips(&["8.8.8.8", "2001:db8::1"])),
        );
        assert_eq!(
            apply(r#"{"ip":["8.8.8.8",5,"x"]}"#, &p),
            r#"{"ip":["8.8.8.8",5,"x","2001:db8::1"]}"#
        );
        assert_eq!(
            apply(r#"{"ip":"2001:DB8:0::1"}"#, &p),
            r#"{"ip":["2001:DB8:0::1","8.8.8.8"]}"#,
            "equal addresses in another spelling count once"
        );
        assert_eq!(
            apply(r#"{"ip":[]}"#, &p),
            r#"{"ip":["8.8.8.8","2001:db8::1"]}"#
        );
        assert_eq!(apply("{}", &p), r#"{"ip":["8.8.8.8","2001:db8::1"]}"#);
    }

    #[test]
    fn appends_to_an_array_and_never_writes_an_empty_one() {
        let p = vec![("e".to_string(), Patch::Append(vec![r#"{"n":2}"#.into()]))];
        assert_eq!(
            apply(r#"{"e":[{"n":1}]}"#, &p),
            r#"{"e":[{"n":1},{"n":2}]}"#
        );
        let none = vec![
            ("e".to_string(), Patch::Append(Vec::new())),
            ("o".to_string(), Patch::Object(Vec::new())),
        ];
        assert_eq!(apply(r#"{"a":1}"#, &none), r#"{"a":1}"#);
    }

    #[test]
    fn a_duplicate_patched_key_is_written_once() {
        let p = vec![("e".to_string(), Patch::Replace("1".into()))];
        assert_eq!(apply(r#"{"e":0,"x":2,"e":3}"#, &p), r#"{"e":1,"x":2}"#);
    }

    #[test]
    fn get_follows_objects_only() {
        let m = members(r#"{"a":{"b":"1.2.3.4"},"s":"x"}"#);
        assert_eq!(
            address(get(&m, &["a", "b"]).unwrap()),
            "1.2.3.4".parse().ok()
        );
        assert!(get(&m, &["s", "b"]).is_none());
        assert!(get(&m, &["zz"]).is_none());
    }
}
