//! Deserialising the typed config from a parsed YAML tree.
//!
//! `${VAR}` is substituted into the string scalars of the parsed tree (see `load.rs`),
//! so the typed config is read from a [`Value`], not from the text. serde_yaml_ng's own
//! `&Value` deserializer is stricter about scalars than its text deserializer, and the
//! difference would break configs that work today: the text deserializer reads any
//! plain scalar as a string (`group_id: 2024`, `options: {linger.ms: 5}`) and an empty
//! one as an empty map (`stdout:`). [`Node`] restores those rules, and also reads a
//! number or a boolean from a string, because a substituted value is always a string
//! (`dry_run: ${DRY_RUN:-true}`). Everything else is delegated to `&Value`.
//!
//! Errors carry no location (a `Value` has none); `load.rs` finds the line from the
//! key path.

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    Unexpected, VariantAccess, Visitor,
};
use serde_yaml_ng::{Error, Mapping, Value};

/// One node of the tree, deserialised with the scalar rules described above.
#[derive(Clone, Copy)]
pub(super) struct Node<'a>(pub(super) &'a Value);

/// `true` / `false` as YAML 1.2's core schema spells them.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// A number requested where the tree holds a string: the string is parsed as an
/// environment variable holds it (decimal, surrounding blanks ignored).
fn parse_number<T: std::str::FromStr>(s: &str, expected: &dyn de::Expected) -> Result<T, Error> {
    s.trim()
        .parse()
        .map_err(|_| de::Error::invalid_type(Unexpected::Str(s), expected))
}

impl<'de> Deserializer<'de> for Node<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Sequence(items) => visitor.visit_seq(Seq(items.iter())),
            Value::Mapping(map) => visitor.visit_map(Map::new(map)),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => match parse_bool(s.trim()) {
                Some(b) => visitor.visit_bool(b),
                None => Err(de::Error::invalid_type(Unexpected::Str(s), &visitor)),
            },
            other => other.deserialize_bool(visitor),
        }
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => {
                let n: i8 = parse_number(s, &visitor)?;
                visitor.visit_i8(n)
            }
            other => other.deserialize_i8(visitor),
        }
    }

    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => {
                let n: i16 = parse_number(s, &visitor)?;
                visitor.visit_i16(n)
            }
            other => other.deserialize_i16(visitor),
        }
    }

    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => {
                let n: i32 = parse_number(s, &visitor)?;
                visitor.visit_i32(n)
            }
            other => other.deserialize_i32(visitor),
        }
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => {
                let n: i64 = parse_number(s, &visitor)?;
                visitor.visit_i64(n)
            }
            other => other.deserialize_i64(visitor),
        }
    }

    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => {
                let n: i128 = parse_number(s, &visitor)?;
                visitor.visit_i128(n)
            }
            other => other.deserialize_i128(visitor),
        }
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => {
                let n: u8 = parse_number(s, &visitor)?;
                visitor.visit_u8(n)
            }
            other => other.deserialize_u8(visitor),
        }
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => {
                let n: u16 = parse_number(s, &visitor)?;
                visitor.visit_u16(n)
            }
            other => other.deserialize_u16(visitor),
        }
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => {
                let n: u32 = parse_number(s, &visitor)?;
                visitor.visit_u32(n)
            }
            other => other.deserialize_u32(visitor),
        }
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => {
                let n: u64 = parse_number(s, &visitor)?;
                visitor.visit_u64(n)
            }
            other => other.deserialize_u64(visitor),
        }
    }

    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => {
                let n: u128 = parse_number(s, &visitor)?;
                visitor.visit_u128(n)
            }
            other => other.deserialize_u128(visitor),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => {
                let n: f32 = parse_number(s, &visitor)?;
                visitor.visit_f32(n)
            }
            other => other.deserialize_f32(visitor),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => {
                let n: f64 = parse_number(s, &visitor)?;
                visitor.visit_f64(n)
            }
            other => other.deserialize_f64(visitor),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_char(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            // As the text deserializer: a plain scalar is a string when a string is wanted.
            Value::Number(n) => visitor.visit_string(n.to_string()),
            Value::Bool(b) => visitor.visit_borrowed_str(if *b { "true" } else { "false" }),
            other => other.deserialize_str(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_bytes(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_byte_buf(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_unit(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.0.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Sequence(items) => visitor.visit_seq(Seq(items.iter())),
            other => other.deserialize_seq(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Mapping(map) => visitor.visit_map(Map::new(map)),
            // As the text deserializer: `stdout:` with nothing after it is an empty map.
            Value::Null => visitor.visit_map(Map::empty()),
            other => other.deserialize_map(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            // `format: json`: a unit variant.
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            // `kafka: {...}`: a single-key map names the variant.
            Value::Mapping(map) if map.len() == 1 => match map.iter().next() {
                Some((key, value)) => visitor.visit_enum(Enum { key, value }),
                None => self.0.deserialize_enum(name, variants, visitor),
            },
            other => other.deserialize_enum(name, variants, visitor),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

/// The items of a sequence, each a [`Node`].
struct Seq<'a>(std::slice::Iter<'a, Value>);

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0
            .next()
            .map(|item| seed.deserialize(Node(item)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// The entries of a mapping, keys and values each a [`Node`].
struct Map<'a> {
    entries: Option<serde_yaml_ng::mapping::Iter<'a>>,
    value: Option<&'a Value>,
}

impl<'a> Map<'a> {
    fn new(map: &'a Mapping) -> Self {
        Map {
            entries: Some(map.iter()),
            value: None,
        }
    }

    fn empty() -> Self {
        Map {
            entries: None,
            value: None,
        }
    }
}

impl<'de> MapAccess<'de> for Map<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.entries.as_mut().and_then(Iterator::next) {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(Node(key)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(Node(value)),
            None => Err(de::Error::custom(
                "a map value was asked for before its key",
            )),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.entries.as_ref().map(ExactSizeIterator::len)
    }
}

/// A variant written as a single-key map.
struct Enum<'a> {
    key: &'a Value,
    value: &'a Value,
}

impl<'de> EnumAccess<'de> for Enum<'de> {
    type Error = Error;
    type Variant = Node<'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Node<'de>), Error> {
        let variant = seed.deserialize(Node(self.key))?;
        Ok((variant, Node(self.value)))
    }
}

impl<'de> VariantAccess<'de> for Node<'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.0 {
            Value::Null => Ok(()),
            other => Err(de::Error::invalid_type(
                unexpected(other),
                &"a unit variant",
            )),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }
}

/// What a value is, for an "invalid type" message; strings are not quoted.
fn unexpected(value: &Value) -> Unexpected<'static> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(_) => Unexpected::Other("a boolean"),
        Value::Number(_) => Unexpected::Other("a number"),
        Value::String(_) => Unexpected::Other("a string"),
        Value::Sequence(_) => Unexpected::Seq,
        Value::Mapping(_) => Unexpected::Map,
        Value::Tagged(_) => Unexpected::Other("a tagged value"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use serde::Deserialize;

    use super::*;

    fn read<T: for<'de> Deserialize<'de>>(yaml: &str) -> Result<T, Error> {
        let value: Value = serde_yaml_ng::from_str(yaml).unwrap();
        T::deserialize(Node(&value))
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Scalars {
        flag: bool,
        count: u32,
        ratio: f64,
        name: String,
        options: BTreeMap<String, String>,
        path: Option<PathBuf>,
    }

    #[test]
    fn substituted_strings_read_as_numbers_and_booleans() {
        let got: Scalars =
            read("flag: 'true'\ncount: '20000'\nratio: '0.5'\nname: n\noptions: {}\npath: ~\n")
                .unwrap();
        assert!(got.flag);
        assert_eq!(got.count, 20_000);
        assert_eq!(got.ratio, 0.5);
        assert_eq!(got.path, None);
    }

    #[test]
    fn plain_scalars_read_as_strings_as_the_text_deserializer_does() {
        let got: Scalars = read(
            "flag: false\ncount: 3\nratio: 1\nname: 2024\noptions: {linger.ms: 5, idempotence: true}\npath: /x\n",
        )
        .unwrap();
        assert_eq!(got.name, "2024");
        assert_eq!(got.options["linger.ms"], "5");
        assert_eq!(got.options["idempotence"], "true");
        assert_eq!(got.ratio, 1.0);
        assert_eq!(got.path, Some(PathBuf::from("/x")));
    }

    #[test]
    fn a_string_that_is_not_a_number_is_refused() {
        let err =
            read::<Scalars>("flag: true\ncount: lots\nratio: 1\nname: n\noptions: {}\npath: ~\n")
                .unwrap_err();
        assert!(err.to_string().contains("expected u32"), "{err}");
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        Json,
        File { path: String },
        Stdout(Empty),
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(deny_unknown_fields)]
    struct Empty {}

    #[test]
    fn enums_are_names_or_single_key_maps() {
        assert_eq!(read::<Kind>("json").unwrap(), Kind::Json);
        assert_eq!(
            read::<Kind>("file: {path: x}").unwrap(),
            Kind::File { path: "x".into() }
        );
        // An empty value is an empty map, as with the text deserializer.
        assert_eq!(read::<Kind>("stdout:").unwrap(), Kind::Stdout(Empty {}));
        assert!(read::<Kind>("{a: 1, b: 2}").is_err());
        assert!(read::<Kind>("nope")
            .unwrap_err()
            .to_string()
            .contains("unknown variant"));
    }
}
