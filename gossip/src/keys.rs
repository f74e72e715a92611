//! API keys as the catalog carries them to nodes: scopes, the models a key may use, its rate
//! limits and the sha256 of the key (never the key). Pure: parsing and hashing, no I/O.
//!
//! A key reads `mk_<id>_<secret>`: `id` (10 hex digits) names it in lists, logs and limits;
//! `secret` is 32 random bytes in hex. The stored hash is sha256 of the whole key text, so
//! `printf %s "$KEY" | sha256sum` gives it too.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Predict (seed, V2, streaming), read features and metadata.
    #[serde(rename = "predict")]
    Predict,
    /// Submit, follow, cancel and download batch jobs.
    #[serde(rename = "batch")]
    Batch,
    /// Write and ingest features.
    #[serde(rename = "features:write")]
    FeaturesWrite,
    /// Control's operator API (models, rollouts, experiments, keys).
    #[serde(rename = "admin")]
    Admin,
    /// A node's own reports to control (heartbeats, latency reports): a node's `auth.peer_key`.
    #[serde(rename = "node")]
    Node,
}

impl Scope {
    pub const ALL: [Scope; 5] =
        [Scope::Predict, Scope::Batch, Scope::FeaturesWrite, Scope::Admin, Scope::Node];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Predict => "predict",
            Scope::Batch => "batch",
            Scope::FeaturesWrite => "features:write",
            Scope::Admin => "admin",
            Scope::Node => "node",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes (a bit set; serialised as a list of names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    pub const NONE: Scopes = Scopes(0);

    pub fn all() -> Scopes {
        Scope::ALL.into_iter().collect()
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn insert(&mut self, scope: Scope) {
        self.0 |= scope.bit();
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// OAuth's form: names separated by spaces (`"predict batch"`); unknown names are ignored.
    pub fn parse_oauth(text: &str) -> Scopes {
        text.split_ascii_whitespace().filter_map(Scope::parse).collect()
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        let mut s = Scopes::NONE;
        for scope in iter {
            s.insert(scope);
        }
        s
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::as_str).collect();
        f.write_str(&names.join(" "))
    }
}

impl Serialize for Scopes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<Scope>::deserialize(d)?.into_iter().collect())
    }
}

/// A key's own rate limits; `None` takes the node's default, `Some(0)` means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predict_per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_per_minute: Option<u32>,
}

/// An active key as nodes see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyEntry {
    /// Hex sha256 of the whole key text.
    pub hash: String,
    pub scopes: Scopes,
    /// The only models the key may use; `None`: every model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<BTreeSet<String>>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub limits: KeyLimits,
}

fn is_default(limits: &KeyLimits) -> bool {
    *limits == KeyLimits::default()
}

/// The prefix every API key starts with (JWTs start with `ey`).
pub const KEY_PREFIX: &str = "mk_";

/// The id of a key of the form `mk_<id>_<secret>`, or `None` for anything else.
pub fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let ok = |s: &str, len: std::ops::RangeInclusive<usize>| {
        len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
    };
    (ok(id, 4..=32) && ok(secret, 16..=128)).then_some(id)
}

/// sha256 of the key text, raw.
pub fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// sha256 of the key text, hex (what control stores and the catalog carries).
pub fn key_hash_hex(key: &str) -> String {
    hex::encode(key_hash(key))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn scopes_round_trip_as_names_and_parse_oauth_style() {
        let s = Scopes::parse_oauth("predict  features:write bogus");
        assert!(s.contains(Scope::Predict) && s.contains(Scope::FeaturesWrite));
        assert!(!s.contains(Scope::Batch) && !s.contains(Scope::Admin));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"["predict","features:write"]"#);
        assert_eq!(serde_json::from_str::<Scopes>(&json).unwrap(), s);
        assert_eq!(s.to_string(), "predict features:write");
        assert!(serde_json::from_str::<Scopes>(r#"["root"]"#).is_err());
    }

    #[test]
    fn key_ids_come_only_from_well_formed_keys() {
        let secret = "ab".repeat(32);
        assert_eq!(key_id(&format!("mk_0123abcdef_{secret}")), Some("0123abcdef"));
        assert_eq!(key_id("mk_0123abcdef_short"), None);
        assert_eq!(key_id(&format!("mk_01-3abcdef_{secret}")), None);
        assert_eq!(key_id(&format!("xx_0123abcdef_{secret}")), None);
        assert_eq!(key_id("eyJhbGciOiJIUzI1NiJ9.e30.sig"), None);
        assert_eq!(key_hash_hex("abc").len(), 64);
    }
}
