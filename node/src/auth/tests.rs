#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, Method};
use governor::clock::FakeRelativeClock;
use jsonwebtoken::{encode, EncodingKey, Header};
use meridian_gossip::keys::{key_hash_hex, KeyEntry};
use serde_json::json;

use super::jwt::{JwtAlg, JwtIssuer};
use super::layer::access;
use super::*;

const NOW: u64 = 1_700_000_000;
const SECRET: &str = "an HS256 secret of at least thirty-two bytes";
const RSA_PRIVATE: &str = include_str!("../../tests/fixtures/jwt/rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("../../tests/fixtures/jwt/rsa-public.pem");
const ED_PRIVATE: &str = include_str!("../../tests/fixtures/jwt/ed25519-private.pem");
const ED_PUBLIC: &str = include_str!("../../tests/fixtures/jwt/ed25519-public.pem");
const OTHER_ED_PRIVATE: &str = include_str!("../../tests/fixtures/jwt/other-ed25519-private.pem");

fn issuer(alg: JwtAlg) -> JwtIssuer {
    let (secret, public_key_pem) = match alg {
        JwtAlg::HS256 => (Some(SECRET.to_string()), None),
        JwtAlg::RS256 => (None, Some(RSA_PUBLIC.to_string())),
        JwtAlg::EdDSA => (None, Some(ED_PUBLIC.to_string())),
    };
    JwtIssuer {
        alg,
        secret,
        public_key_pem,
        jwks_file: None,
        issuer: "https://idp.test".into(),
        audience: Some("meridian".into()),
    }
}

fn authenticator() -> Authenticator {
    let config = AuthConfig {
        jwt: vec![issuer(JwtAlg::HS256), issuer(JwtAlg::RS256), issuer(JwtAlg::EdDSA)],
        leeway_secs: 5,
        ..AuthConfig::default()
    };
    assert!(config.problems().is_empty(), "{:?}", config.problems());
    Authenticator::with_clock(&config, Arc::new(|| NOW)).unwrap()
}

fn claims(exp_in: i64) -> serde_json::Value {
    json!({ "sub": "alice", "iss": "https://idp.test", "aud": "meridian",
            "exp": NOW as i64 + exp_in, "scope": "predict batch", "models": ["m1"] })
}

fn sign(alg: JwtAlg, claims: &serde_json::Value) -> String {
    let (a, key) = match alg {
        JwtAlg::HS256 => (jsonwebtoken::Algorithm::HS256, EncodingKey::from_secret(SECRET.as_bytes())),
        JwtAlg::RS256 => {
            (jsonwebtoken::Algorithm::RS256, EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap())
        }
        JwtAlg::EdDSA => {
            (jsonwebtoken::Algorithm::EdDSA, EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap())
        }
    };
    encode(&Header::new(a), claims, &key).unwrap()
}

#[test]
fn fresh_tokens_of_every_algorithm_are_accepted_and_expired_ones_refused() {
    let auth = authenticator();
    for alg in [JwtAlg::HS256, JwtAlg::RS256, JwtAlg::EdDSA] {
        let p = auth.authenticate(Some(&sign(alg, &claims(60)))).unwrap();
        assert_eq!(p.id, "jwt:alice");
        assert!(p.allow(Scope::Predict, Some("m1")).is_ok());
        assert_eq!(p.allow(Scope::Predict, Some("m2")), Err(AuthError::ModelNotAllowed("m2".into())));
        assert_eq!(p.allow(Scope::FeaturesWrite, None), Err(AuthError::MissingScope(Scope::FeaturesWrite)));
        // Past exp by more than the leeway: refused; within it: accepted.
        assert_eq!(auth.authenticate(Some(&sign(alg, &claims(-6)))), Err(AuthError::Expired), "{alg:?}");
        assert!(auth.authenticate(Some(&sign(alg, &claims(-4)))).is_ok());
    }
}

#[test]
fn a_cached_token_is_refused_once_it_expires() {
    let now = Arc::new(std::sync::atomic::AtomicU64::new(NOW));
    let clock = now.clone();
    let config = AuthConfig { jwt: vec![issuer(JwtAlg::HS256)], leeway_secs: 0, ..AuthConfig::default() };
    let auth = Authenticator::with_clock(
        &config,
        Arc::new(move || clock.load(std::sync::atomic::Ordering::Relaxed)),
    )
    .unwrap();
    let token = sign(JwtAlg::HS256, &claims(10));
    assert!(auth.authenticate(Some(&token)).is_ok());
    now.store(NOW + 10, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(auth.authenticate(Some(&token)), Err(AuthError::Expired));
}

#[test]
fn wrong_audience_issuer_key_nbf_and_alg_none_are_refused() {
    let auth = authenticator();
    let mut c = claims(60);
    c["aud"] = json!("someone-else");
    assert_eq!(auth.authenticate(Some(&sign(JwtAlg::HS256, &c))), Err(AuthError::WrongAudience));
    let mut c = claims(60);
    c["iss"] = json!("https://evil.test");
    assert_eq!(auth.authenticate(Some(&sign(JwtAlg::RS256, &c))), Err(AuthError::WrongIssuer));
    let mut c = claims(60);
    c["nbf"] = json!(NOW + 60);
    assert_eq!(auth.authenticate(Some(&sign(JwtAlg::EdDSA, &c))), Err(AuthError::NotYetValid));
    let mut c = claims(60);
    c.as_object_mut().unwrap().remove("exp");
    assert!(matches!(auth.authenticate(Some(&sign(JwtAlg::HS256, &c))), Err(AuthError::Invalid(_))));
    // Signed by a key nobody configured.
    let other = EncodingKey::from_ed_pem(OTHER_ED_PRIVATE.as_bytes()).unwrap();
    let forged = encode(&Header::new(jsonwebtoken::Algorithm::EdDSA), &claims(60), &other).unwrap();
    assert!(matches!(auth.authenticate(Some(&forged)), Err(AuthError::Invalid(_))));
    let wrong_secret = encode(&Header::default(), &claims(60), &EncodingKey::from_secret(b"guess")).unwrap();
    assert!(matches!(auth.authenticate(Some(&wrong_secret)), Err(AuthError::Invalid(_))));
    // `alg: none`, no signature.
    use base64::Engine;
    let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!("{}.{}.", b64(json!({"alg": "none", "typ": "JWT"})), b64(claims(60)));
    assert!(matches!(auth.authenticate(Some(&none)), Err(AuthError::Malformed(_))));
    // An RS256 token re-signed as HS256 with the public key as the secret (alg confusion).
    let confused =
        encode(&Header::default(), &claims(60), &EncodingKey::from_secret(RSA_PUBLIC.as_bytes())).unwrap();
    assert!(matches!(auth.authenticate(Some(&confused)), Err(AuthError::Invalid(_))));
    assert_eq!(auth.authenticate(None), Err(AuthError::Missing));
    assert!(matches!(auth.authenticate(Some("garbage")), Err(AuthError::Malformed(_))));
}

fn catalog_with_key(key: &str, epoch: u64) -> Catalog {
    let mut catalog = Catalog { epoch, ..Catalog::default() };
    let entry = KeyEntry {
        hash: key_hash_hex(key),
        scopes: [Scope::Predict].into_iter().collect(),
        models: None,
        limits: KeyLimits { predict_per_second: Some(5), batch_per_minute: None },
    };
    catalog.keys.insert(meridian_gossip::keys::key_id(key).unwrap().to_string(), entry);
    catalog
}

#[test]
fn api_keys_follow_the_catalog_and_revoked_ones_say_so() {
    let auth = authenticator();
    let key = format!("mk_0123456789_{}", "ab".repeat(32));
    assert_eq!(auth.authenticate(Some(&key)), Err(AuthError::UnknownKey("0123456789".into())));
    auth.adopt(&catalog_with_key(&key, 1));
    let p = auth.authenticate(Some(&key)).unwrap();
    assert_eq!((p.id.as_str(), p.limits.predict_per_second), ("0123456789", Some(5)));
    let wrong = format!("mk_0123456789_{}", "cd".repeat(32));
    assert!(matches!(auth.authenticate(Some(&wrong)), Err(AuthError::Invalid(_))));
    let mut revoked = Catalog { epoch: 2, ..Catalog::default() };
    revoked.revoked_keys.insert("0123456789".into());
    auth.adopt(&revoked);
    assert_eq!(auth.authenticate(Some(&key)), Err(AuthError::Revoked("0123456789".into())));
}

#[test]
fn credentials_come_from_bearer_or_x_api_key_and_auth_off_is_anonymous() {
    let mut h = HeaderMap::new();
    assert_eq!(credential_of(&h), Ok(None));
    h.insert("x-api-key", "k".parse().unwrap());
    assert_eq!(credential_of(&h), Ok(Some("k")));
    h.insert("authorization", "Bearer t".parse().unwrap());
    assert_eq!(credential_of(&h), Ok(Some("t")));
    h.insert("authorization", "Basic dTpw".parse().unwrap());
    assert!(credential_of(&h).is_err());
    let off = Authenticator::new(&AuthConfig { enabled: false, ..AuthConfig::default() }).unwrap();
    let p = off.from_headers(&HeaderMap::new()).unwrap();
    assert_eq!(p.id, "anonymous");
    assert!(Scope::ALL.iter().all(|s| p.allow(*s, Some("any")).is_ok()));
    let on = Authenticator::new(&AuthConfig::default()).unwrap();
    assert_eq!(on.from_headers(&HeaderMap::new()), Err(AuthError::Missing));
}

#[test]
fn routes_map_to_scopes_and_limits() {
    let get = Method::GET;
    let post = Method::POST;
    let put = Method::PUT;
    for open in ["/healthz", "/readyz", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready"] {
        assert_eq!(access(&get, open).scope, None, "{open}");
    }
    for predict in
        ["/api/v1/models/{model}/predict", "/api/v1/models/{model}/stream", "/v2/models/{model}/infer"]
    {
        let a = access(&post, predict);
        assert_eq!((a.scope, a.per_model, a.limit), (Some(Scope::Predict), true, Some(LimitKind::Predict)));
    }
    let meta = access(&get, "/v2/models/{model}/versions/{version}");
    assert_eq!((meta.scope, meta.per_model, meta.limit), (Some(Scope::Predict), true, None));
    assert_eq!(access(&get, "/api/v1/node").scope, Some(Scope::Predict));
    assert_eq!(access(&get, "/api/v1/features/{view}/{entity}").scope, Some(Scope::Predict));
    assert_eq!(access(&put, "/api/v1/features/{view}/{entity}").scope, Some(Scope::FeaturesWrite));
    assert_eq!(access(&post, "/api/v1/features/{view}/ingest").scope, Some(Scope::FeaturesWrite));
    assert_eq!(access(&post, "/api/v1/batch").limit, Some(LimitKind::Batch));
    assert_eq!(access(&get, "/api/v1/batch").limit, None);
    assert_eq!(access(&get, "/api/v1/batch/{id}/result").scope, Some(Scope::Batch));
    assert_eq!(access(&get, "/api/v1/batch/{id}/input").scope, None);
    assert_eq!(access(&post, "/api/v1/something/new").scope, Some(Scope::Admin));
}

#[test]
fn limits_take_the_key_then_model_then_default_rate_per_key_and_model() {
    let clock = FakeRelativeClock::default();
    let mut config = LimitsConfig { predict_per_second: 3, batch_per_minute: 2, ..LimitsConfig::default() };
    config.models.insert("slow".into(), limits::ModelLimits { predict_per_second: Some(1) });
    let limits = Limits::with_clock(config, clock.clone());
    let mut a = Principal { id: "a".into(), ..Principal::anonymous() };
    a.limits = KeyLimits::default();
    let first = limits.check(&a, "m", LimitKind::Predict).unwrap().unwrap();
    assert_eq!((first.limit, first.remaining), (3, 2));
    limits.check(&a, "m", LimitKind::Predict).unwrap();
    let last = limits.check(&a, "m", LimitKind::Predict).unwrap().unwrap();
    assert_eq!((last.remaining, last.reset_secs), (0, 1));
    let refused = limits.check(&a, "m", LimitKind::Predict).unwrap_err();
    assert!(refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_millis(334));
    assert_eq!(refused.retry_after_secs(), 1);
    // Another model, another bucket; a model's own rate; another key, another bucket.
    limits.check(&a, "other", LimitKind::Predict).unwrap();
    limits.check(&a, "slow", LimitKind::Predict).unwrap();
    assert!(limits.check(&a, "slow", LimitKind::Predict).is_err());
    let b = Principal { id: "b".into(), ..a.clone() };
    limits.check(&b, "m", LimitKind::Predict).unwrap();
    // The key's own rate wins; 0 is no limit.
    let fast = Principal {
        id: "f".into(),
        limits: KeyLimits { predict_per_second: Some(0), batch_per_minute: Some(1) },
        ..a.clone()
    };
    for _ in 0..100 {
        assert_eq!(limits.check(&fast, "slow", LimitKind::Predict), Ok(None));
    }
    limits.check(&fast, "*", LimitKind::Batch).unwrap();
    let wait = limits.check(&fast, "*", LimitKind::Batch).unwrap_err();
    assert_eq!(wait.retry_after_secs(), 60);
    clock.advance(Duration::from_secs(1));
    assert!(limits.check(&a, "m", LimitKind::Predict).is_ok());
}

#[test]
fn a_jwks_file_supplies_keys_picked_by_kid() {
    use base64::Engine;
    let (std_b64, url_b64) =
        (base64::engine::general_purpose::STANDARD, base64::engine::general_purpose::URL_SAFE_NO_PAD);
    // The raw Ed25519 public key is the last 32 bytes of the PEM's SubjectPublicKeyInfo.
    let body: String = ED_PUBLIC.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = std_b64.decode(body).unwrap();
    let x = url_b64.encode(&der[der.len() - 32..]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let jwks = json!({ "keys": [{ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "alg": "EdDSA", "use": "sig" }] });
    std::fs::write(&path, jwks.to_string()).unwrap();
    let jwt = JwtIssuer { public_key_pem: None, jwks_file: Some(path), ..issuer(JwtAlg::EdDSA) };
    let config = AuthConfig { jwt: vec![jwt], ..AuthConfig::default() };
    assert!(config.problems().is_empty(), "{:?}", config.problems());
    let auth = Authenticator::with_clock(&config, Arc::new(|| NOW)).unwrap();
    let key = EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap();
    let mut header = Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("k1".into());
    assert!(auth.authenticate(Some(&encode(&header, &claims(60), &key).unwrap())).is_ok());
    header.kid = Some("k2".into());
    assert!(matches!(
        auth.authenticate(Some(&encode(&header, &claims(60), &key).unwrap())),
        Err(AuthError::Invalid(_))
    ));
    let missing = JwtIssuer { jwks_file: Some(dir.path().join("nope.json")), ..config.jwt[0].clone() };
    let err = Authenticator::new(&AuthConfig { jwt: vec![missing], ..AuthConfig::default() }).unwrap_err();
    assert!(err.contains("nope.json"), "{err}");
}
