//! Loads untrusted YAML into a [`Value`] within a node budget. YAML aliases let a small file
//! stand for a huge tree ("billion laughs", or one big anchored list referenced many times);
//! serde_yaml bounds the number of alias jumps but not the size of what each jump replays,
//! so a 1 MiB file could still expand to billions of nodes. The file is therefore walked
//! once without keeping anything, counting every node as aliases expand it, and only loaded
//! into memory when the count fits. The walk stops at the first node over the budget, so time
//! and memory are bounded by the budget whatever the file holds. Nesting depth is bounded by
//! serde_yaml itself (128 levels), but only after the whole file has been scanned, and the
//! scanner (libyaml's) spends time proportional to the flow nesting level on every token:
//! a file of 100,000 `[` took minutes. The number of flow openers (`[`, `{`, wherever they
//! are) bounds that level, so their count times the file's size is held to [`FLOW_BUDGET`]
//! before the scanner sees the file.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use serde_yaml::Value;

/// Marker in the error the walk stops with, to tell it apart from a YAML syntax error.
const OVER_BUDGET: &str = "slipway: over the YAML node budget";

/// Bytes × flow openers a file may have: a 1 MiB file may hold 128 `[`/`{`, a 20 KiB one
/// 6,500. Scanning costs at most about three times a flat file of the same size.
pub(crate) const FLOW_BUDGET: usize = 1 << 27;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LoadError {
    /// Not YAML (the message says where).
    Syntax(String),
    /// More than `budget` nodes once aliases are expanded.
    TooManyNodes { budget: usize },
    /// More `[`/`{` than a file of this size may have.
    TooManyFlowOpeners { count: usize, allowed: usize },
}

/// How many nodes a file of `len` bytes may expand to. Written out, YAML needs at least two
/// bytes per node, so a file without aliases stays far below this; real compose files use
/// tens of bytes per node.
pub(crate) fn node_budget(len: usize) -> usize {
    10_000usize.saturating_add(len / 4)
}

pub(crate) fn load(text: &[u8]) -> Result<Value, LoadError> {
    let openers = text.iter().filter(|b| matches!(b, b'[' | b'{')).count();
    if openers.saturating_mul(text.len()) > FLOW_BUDGET {
        return Err(LoadError::TooManyFlowOpeners {
            count: openers,
            allowed: FLOW_BUDGET / text.len().max(1),
        });
    }
    let budget = node_budget(text.len());
    let left = Cell::new(budget);
    let walked = Counter { left: &left }.deserialize(serde_yaml::Deserializer::from_slice(text));
    if let Err(e) = walked {
        let message = e.to_string();
        return Err(if message.contains(OVER_BUDGET) {
            LoadError::TooManyNodes { budget }
        } else {
            LoadError::Syntax(message)
        });
    }
    serde_yaml::from_slice(text).map_err(|e| LoadError::Syntax(e.to_string()))
}

/// Visits every node, keeping nothing but the number of nodes still allowed.
#[derive(Clone, Copy)]
struct Counter<'a> {
    left: &'a Cell<usize>,
}

impl Counter<'_> {
    fn tick<E: de::Error>(self) -> Result<(), E> {
        match self.left.get().checked_sub(1) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => Err(E::custom(OVER_BUDGET)),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.tick()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.tick()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.tick()
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.tick()
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.tick()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.tick()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.tick()
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        self.tick()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.tick()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.tick()
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.tick()?;
        self.deserialize(deserializer)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.tick()?;
        self.deserialize(deserializer)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.tick()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.tick()?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
    /// A tagged node (`!tag value`): the tag, then the value.
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        self.tick()?;
        let ((), variant) = data.variant_seed(self)?;
        de::VariantAccess::newtype_variant_seed(variant, self)
    }
}
