//! Catalogs and key revocations signed by control (ed25519), and the rules every node applies
//! before adopting one. No I/O.
//!
//! What is signed is small and canonical: a domain tag, the epoch (or serial), and the sha256
//! digest of the content ([`Catalog::digest`], canonical JSON with ordered maps). Nodes
//! recompute the digest from what they received, so a signature covers every byte of content.
//! Several public keys may be trusted at once (key rotation); each signature names its key.

use std::collections::BTreeSet;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Catalog;

const CATALOG_DOMAIN: &[u8] = b"meridian-catalog-v1\0";
const REVOCATION_DOMAIN: &[u8] = b"meridian-revocation-v1\0";
/// Most key ids one revocation may carry, and their longest id.
pub const MAX_REVOKED_PER_BATCH: usize = 256;
pub const MAX_KEY_ID: usize = 128;

/// A catalog with control's signature over (epoch, digest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCatalog {
    pub catalog: Catalog,
    /// Which control key signed it: [`ControlPublicKey::key_id`].
    pub key_id: String,
    /// 64 bytes, hex.
    pub signature: String,
}

/// A batch of revoked API key ids. Revocations only accumulate: a node keeps the union of
/// every batch it verified, forever (a revoked key is never un-revoked by gossip).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRevocation {
    /// Control's sequence number for this batch; batches are told apart by it.
    pub serial: u64,
    pub key_ids: BTreeSet<String>,
    pub key_id: String,
    pub signature: String,
}

/// Why a catalog or revocation was refused. Each is counted and logged by the core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("signed by unknown key {0:?}")]
    UnknownKey(String),
    #[error("bad signature")]
    BadSignature,
    #[error("epoch {got} is not newer than {have}")]
    Stale { have: u64, got: u64 },
    #[error("malformed: {0}")]
    Malformed(String),
}

/// Control's signing key. Control keeps the 32-byte seed secret; nodes get the public key.
pub struct ControlKey {
    key: SigningKey,
    id: String,
}

impl std::fmt::Debug for ControlKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ControlKey({})", self.id)
    }
}

impl ControlKey {
    /// From a 32-byte secret seed (generate it from the OS RNG and store it like a password).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let id = key_id(&key.verifying_key());
        Self { key, id }
    }

    pub fn public(&self) -> ControlPublicKey {
        ControlPublicKey { key: self.key.verifying_key(), id: self.id.clone() }
    }

    /// Sign `catalog` as it is (set its epoch first).
    pub fn sign_catalog(&self, catalog: Catalog) -> SignedCatalog {
        let message = catalog_message(catalog.epoch, &catalog.digest());
        let signature = hex::encode(self.key.sign(&message).to_bytes());
        SignedCatalog { catalog, key_id: self.id.clone(), signature }
    }

    pub fn sign_revocation(&self, serial: u64, key_ids: BTreeSet<String>) -> SignedRevocation {
        let message = revocation_message(serial, &key_ids);
        let signature = hex::encode(self.key.sign(&message).to_bytes());
        SignedRevocation { serial, key_ids, key_id: self.id.clone(), signature }
    }
}

/// A public key nodes trust, from config (hex of the 32-byte ed25519 public key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPublicKey {
    key: VerifyingKey,
    id: String,
}

impl ControlPublicKey {
    pub fn from_hex(s: &str) -> Result<Self, Rejection> {
        let bytes: [u8; 32] = hex::decode(s.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Rejection::Malformed("public key must be 32 bytes of hex".into()))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|e| Rejection::Malformed(e.to_string()))?;
        Ok(Self { id: key_id(&key), key })
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.key.as_bytes())
    }

    /// First 8 bytes of sha256(public key), hex: names the key in signatures and logs.
    pub fn key_id(&self) -> &str {
        &self.id
    }
}

/// The keys a node trusts, and the adoption rules.
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    keys: Vec<ControlPublicKey>,
}

impl Verifier {
    pub fn new(keys: Vec<ControlPublicKey>) -> Self {
        Self { keys }
    }

    fn check(&self, key_id: &str, signature: &str, message: &[u8]) -> Result<(), Rejection> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == key_id)
            .ok_or_else(|| Rejection::UnknownKey(key_id.chars().take(32).collect()))?;
        let bytes: [u8; 64] =
            hex::decode(signature).ok().and_then(|b| b.try_into().ok()).ok_or(Rejection::BadSignature)?;
        key.key.verify_strict(message, &Signature::from_bytes(&bytes)).map_err(|_| Rejection::BadSignature)
    }

    /// Whether a node holding epoch `have` adopts `signed`: the epoch must be strictly newer
    /// (equal is a replay, older a rollback) and the signature good. The cheap epoch check
    /// runs first so replays cost no signature verification.
    pub fn admit_catalog(&self, have: u64, signed: &SignedCatalog) -> Result<(), Rejection> {
        let got = signed.catalog.epoch;
        if got <= have {
            return Err(Rejection::Stale { have, got });
        }
        self.check(&signed.key_id, &signed.signature, &catalog_message(got, &signed.catalog.digest()))
    }

    pub fn admit_revocation(&self, signed: &SignedRevocation) -> Result<(), Rejection> {
        if signed.key_ids.len() > MAX_REVOKED_PER_BATCH || signed.key_ids.iter().any(|k| k.len() > MAX_KEY_ID)
        {
            return Err(Rejection::Malformed("revocation batch too large".into()));
        }
        self.check(&signed.key_id, &signed.signature, &revocation_message(signed.serial, &signed.key_ids))
    }
}

fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

fn catalog_message(epoch: u64, digest: &str) -> Vec<u8> {
    [CATALOG_DOMAIN, &epoch.to_be_bytes(), digest.as_bytes()].concat()
}

fn revocation_message(serial: u64, key_ids: &BTreeSet<String>) -> Vec<u8> {
    let mut h = Sha256::new();
    for k in key_ids {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
    }
    [REVOCATION_DOMAIN, &serial.to_be_bytes(), &h.finalize()[..]].concat()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn catalog(epoch: u64) -> Catalog {
        Catalog { epoch, ..Catalog::default() }
    }

    #[test]
    fn a_signed_catalog_is_admitted_only_when_newer_and_untampered() {
        let control = ControlKey::from_seed(&[7; 32]);
        let public = ControlPublicKey::from_hex(&control.public().to_hex()).unwrap();
        let verifier = Verifier::new(vec![public]);
        let signed = control.sign_catalog(catalog(5));
        assert_eq!(verifier.admit_catalog(4, &signed), Ok(()));
        assert_eq!(verifier.admit_catalog(5, &signed), Err(Rejection::Stale { have: 5, got: 5 }));
        assert_eq!(verifier.admit_catalog(9, &signed), Err(Rejection::Stale { have: 9, got: 5 }));

        let mut tampered = signed.clone();
        tampered.catalog.epoch = 6; // a replayed catalog relabelled as newer
        assert_eq!(verifier.admit_catalog(4, &tampered), Err(Rejection::BadSignature));

        let forger = ControlKey::from_seed(&[8; 32]);
        let forged = forger.sign_catalog(catalog(6));
        assert!(matches!(verifier.admit_catalog(4, &forged), Err(Rejection::UnknownKey(_))));
        let mut forged_as_control = forged.clone();
        forged_as_control.key_id = control.public().key_id().to_string();
        assert_eq!(verifier.admit_catalog(4, &forged_as_control), Err(Rejection::BadSignature));
        let mut junk = signed;
        junk.signature = "zz".into();
        assert_eq!(verifier.admit_catalog(0, &junk), Err(Rejection::BadSignature));
    }

    #[test]
    fn revocations_verify_and_rotation_trusts_both_keys() {
        let (old, new) = (ControlKey::from_seed(&[1; 32]), ControlKey::from_seed(&[2; 32]));
        let verifier = Verifier::new(vec![old.public(), new.public()]);
        let keys: BTreeSet<String> = ["k1".to_string(), "k2".to_string()].into();
        let batch = new.sign_revocation(3, keys.clone());
        assert_eq!(verifier.admit_revocation(&batch), Ok(()));
        assert_eq!(verifier.admit_revocation(&old.sign_revocation(1, keys)), Ok(()));
        let mut widened = batch;
        widened.key_ids.insert("k3".into());
        assert_eq!(verifier.admit_revocation(&widened), Err(Rejection::BadSignature));
        assert!(ControlPublicKey::from_hex("abcd").is_err());
    }
}
