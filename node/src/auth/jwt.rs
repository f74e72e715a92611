//! Bearer JWTs: HS256, RS256 and EdDSA, signed by one of the configured issuers. The signature,
//! `iss` and `aud` are checked by `jsonwebtoken`; `exp` (required) and `nbf` against the
//! injected wall clock with a leeway, so tests can fix the time. Claims used: `sub` (the
//! principal id, `jwt:<sub>`), `scope` (space-separated, OAuth style) and an optional `models`
//! array. A verified token is cached (bounded) so a client reusing it costs a map lookup, not
//! an RSA or Ed25519 verification, per request; its times are checked again on every use.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use super::{AuthError, KeyLimits, Principal, Scopes, WallClock};

/// Verified tokens remembered, and for how long at most.
const CACHE_CAPACITY: u64 = 10_000;
const CACHE_TTL: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlg {
    HS256,
    RS256,
    EdDSA,
}

impl JwtAlg {
    fn algorithm(self) -> Algorithm {
        match self {
            JwtAlg::HS256 => Algorithm::HS256,
            JwtAlg::RS256 => Algorithm::RS256,
            JwtAlg::EdDSA => Algorithm::EdDSA,
        }
    }
}

/// One accepted issuer, `[[auth.jwt]]`: its algorithm, its key (exactly one of `secret`,
/// `public_key_pem` or `jwks_file`), the `iss` it signs as and the `aud` it must name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuer {
    pub alg: JwtAlg,
    /// HS256: the shared secret.
    pub secret: Option<String>,
    /// RS256 / EdDSA: the public key, as PEM text or the path of a PEM file.
    pub public_key_pem: Option<String>,
    /// RS256 / EdDSA: a JWK set (JSON) file; the token's `kid` picks the key.
    pub jwks_file: Option<PathBuf>,
    /// The `iss` claim tokens must carry.
    pub issuer: String,
    /// The `aud` tokens must name; without it, tokens must carry no `aud`.
    pub audience: Option<String>,
}

impl JwtIssuer {
    pub fn problems(&self, i: usize) -> Vec<String> {
        let mut p = Vec::new();
        let given = [self.secret.is_some(), self.public_key_pem.is_some(), self.jwks_file.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            p.push(format!("auth.jwt[{i}]: give exactly one of secret, public_key_pem, jwks_file"));
        }
        if (self.alg == JwtAlg::HS256) != self.secret.is_some() {
            p.push(format!("auth.jwt[{i}]: HS256 takes a secret; RS256 and EdDSA a public key or JWKS"));
        }
        if self.secret.as_ref().is_some_and(|s| s.len() < 32) {
            p.push(format!("auth.jwt[{i}]: the HS256 secret must be at least 32 bytes"));
        }
        if self.issuer.is_empty() {
            p.push(format!("auth.jwt[{i}]: issuer must be set"));
        }
        p
    }

    fn keys(&self) -> Result<Vec<(Option<String>, DecodingKey)>, String> {
        let alg = self.alg.algorithm();
        if let Some(secret) = &self.secret {
            return Ok(vec![(None, DecodingKey::from_secret(secret.as_bytes()))]);
        }
        if let Some(pem) = &self.public_key_pem {
            let text = if pem.contains("-----BEGIN") {
                pem.clone()
            } else {
                std::fs::read_to_string(pem).map_err(|e| format!("cannot read {pem}: {e}"))?
            };
            let key = match alg {
                Algorithm::RS256 => DecodingKey::from_rsa_pem(text.as_bytes()),
                _ => DecodingKey::from_ed_pem(text.as_bytes()),
            };
            return Ok(vec![(
                None,
                key.map_err(|e| format!("public key of issuer {:?}: {e}", self.issuer))?,
            )]);
        }
        let path = self.jwks_file.as_ref().ok_or("no key given")?;
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let set: JwkSet =
            serde_json::from_str(&text).map_err(|e| format!("{} is not a JWK set: {e}", path.display()))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            // A key marked for another algorithm is skipped, not an error: sets mix key types.
            let key_alg = jwk.common.key_algorithm.and_then(|a| a.to_string().parse::<Algorithm>().ok());
            if key_alg.is_some_and(|a| a != alg) {
                continue;
            }
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.push((jwk.common.key_id.clone(), key));
            }
        }
        if keys.is_empty() {
            return Err(format!("{} has no {alg:?} key", path.display()));
        }
        Ok(keys)
    }
}

struct Issuer {
    alg: Algorithm,
    keys: Vec<(Option<String>, DecodingKey)>,
    validation: Validation,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<f64>,
    nbf: Option<f64>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    models: Option<BTreeSet<String>>,
}

#[derive(Clone)]
struct Verified {
    principal: Arc<Principal>,
    not_before: Option<u64>,
}

pub struct Verifier {
    issuers: Vec<Issuer>,
    leeway: u64,
    clock: WallClock,
    cache: moka::sync::Cache<String, Verified>,
}

impl Verifier {
    pub fn new(config: &[JwtIssuer], leeway: u64, clock: WallClock) -> Result<Self, String> {
        let mut issuers = Vec::new();
        for c in config {
            let alg = c.alg.algorithm();
            let mut validation = Validation::new(alg);
            // Times are checked here against the injected clock, not by the library.
            validation.validate_exp = false;
            validation.validate_nbf = false;
            validation.leeway = 0;
            validation.set_issuer(&[&c.issuer]);
            let mut required = vec!["exp", "iss", "sub"];
            if let Some(aud) = &c.audience {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            validation.set_required_spec_claims(&required);
            issuers.push(Issuer { alg, keys: c.keys()?, validation });
        }
        let cache = moka::sync::Cache::builder().max_capacity(CACHE_CAPACITY).time_to_live(CACHE_TTL).build();
        Ok(Self { issuers, leeway, clock, cache })
    }

    pub fn verify(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let now = (self.clock)();
        if let Some(hit) = self.cache.get(token) {
            self.check_times(hit.principal.expires_at, hit.not_before, now)?;
            return Ok(hit.principal);
        }
        let header = decode_header(token).map_err(|e| AuthError::Malformed(format!("not a JWT: {e}")))?;
        let verified = self.decode(token, &header)?;
        self.check_times(verified.principal.expires_at, verified.not_before, now)?;
        self.cache.insert(token.to_string(), verified.clone());
        Ok(verified.principal)
    }

    fn check_times(&self, exp: Option<u64>, nbf: Option<u64>, now: u64) -> Result<(), AuthError> {
        if exp.is_none_or(|exp| exp.saturating_add(self.leeway) <= now) {
            return Err(AuthError::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now.saturating_add(self.leeway)) {
            return Err(AuthError::NotYetValid);
        }
        Ok(())
    }

    /// Try the keys of every issuer using the token's algorithm. A signature that verifies
    /// decides: its claim errors (issuer, audience) are the answer.
    fn decode(&self, token: &str, header: &jsonwebtoken::Header) -> Result<Verified, AuthError> {
        let mut signature_failed = false;
        let mut tried = false;
        for issuer in self.issuers.iter().filter(|i| i.alg == header.alg) {
            let keys = issuer.keys.iter().filter(|(kid, _)| match (kid, &header.kid) {
                (Some(k), Some(want)) => k == want,
                _ => true,
            });
            for (_, key) in keys {
                tried = true;
                match decode::<Claims>(token, key, &issuer.validation) {
                    Ok(data) => return principal_of(data.claims),
                    Err(e) => match e.kind() {
                        ErrorKind::InvalidSignature => signature_failed = true,
                        ErrorKind::InvalidIssuer => return Err(AuthError::WrongIssuer),
                        ErrorKind::InvalidAudience => return Err(AuthError::WrongAudience),
                        ErrorKind::MissingRequiredClaim(c) => {
                            return Err(AuthError::Invalid(format!("the token has no {c:?} claim")))
                        }
                        _ => return Err(AuthError::Invalid(e.to_string())),
                    },
                }
            }
        }
        Err(match (tried, signature_failed) {
            (false, _) => AuthError::Invalid(format!("tokens signed with {:?} are not accepted", header.alg)),
            (true, true) => AuthError::Invalid("the signature does not verify with any accepted key".into()),
            (true, false) => AuthError::Invalid("no accepted key matches the token".into()),
        })
    }
}

fn principal_of(claims: Claims) -> Result<Verified, AuthError> {
    let sub = claims.sub.filter(|s| !s.is_empty()).ok_or_else(|| AuthError::Invalid("empty sub".into()))?;
    let secs = |v: f64| (v.is_finite() && v >= 0.0).then_some(v as u64);
    let principal = Principal {
        id: format!("jwt:{sub}"),
        scopes: claims.scope.as_deref().map(Scopes::parse_oauth).unwrap_or_default(),
        models: claims.models,
        limits: KeyLimits::default(),
        expires_at: claims.exp.and_then(secs),
    };
    Ok(Verified { principal: Arc::new(principal), not_before: claims.nbf.and_then(secs) })
}
