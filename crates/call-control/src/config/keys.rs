//! The list of configuration keys, read off the section structs themselves: serde's derive
//! hands every struct's field names to `Deserializer::deserialize_struct`, so a probe that
//! deserializes [`Config`](super::Config) from nothing (every section empty, so every key
//! takes its default) learns each section and each of its keys. A key added to a struct is
//! a key of the file, of the environment and of the error messages at once.

use std::fmt;

use serde::de::value::{Error, MapDeserializer, StrDeserializer};
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, Visitor};

/// One configuration key: `[section] name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    /// The TOML section (`http`).
    pub section: &'static str,
    /// The key in it (`listen`).
    pub name: &'static str,
}

impl Key {
    /// The environment variable that sets it: `DIALCORE_<SECTION>_<NAME>`.
    pub fn env_var(&self) -> String {
        format!(
            "DIALCORE_{}_{}",
            self.section.to_ascii_uppercase(),
            self.name.to_ascii_uppercase()
        )
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.section, self.name)
    }
}

/// The sections of `T` (a struct of section structs, each `#[serde(default)]`) and their
/// keys, in declaration order. Panics when `T` is not shaped so: a programming error that
/// every test run finds at once.
pub(super) fn probe<T: DeserializeOwned>() -> Vec<Key> {
    let mut keys = Vec::new();
    T::deserialize(Root { keys: &mut keys })
        .expect("the config is a struct of #[serde(default)] section structs");
    keys
}

/// Deserializes the root struct: each of its fields is a section.
struct Root<'a> {
    keys: &'a mut Vec<Key>,
}

impl<'de> Deserializer<'de> for Root<'_> {
    type Error = Error;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_map(Sections {
            names: fields,
            next: 0,
            keys: self.keys,
        })
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
        Err(de::Error::custom("the configuration is not a struct"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The root struct's fields, each with an empty section as its value.
struct Sections<'a> {
    names: &'static [&'static str],
    next: usize,
    keys: &'a mut Vec<Key>,
}

impl<'de> MapAccess<'de> for Sections<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.names.get(self.next) {
            Some(name) => seed.deserialize(StrDeserializer::new(name)).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let section = self.names[self.next];
        self.next += 1;
        seed.deserialize(Section {
            section,
            keys: self.keys,
        })
    }
}

/// Deserializes one section struct from an empty table, noting its field names.
struct Section<'a> {
    section: &'static str,
    keys: &'a mut Vec<Key>,
}

impl<'de> Deserializer<'de> for Section<'_> {
    type Error = Error;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let section = self.section;
        self.keys
            .extend(fields.iter().map(|&name| Key { section, name }));
        visitor.visit_map(MapDeserializer::new(std::iter::empty::<(&str, &str)>()))
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
        Err(de::Error::custom(format!(
            "config section `{}` is not a struct",
            self.section
        )))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}
