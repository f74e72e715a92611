//! What authenticating and rate limiting one request costs, outside HTTP: the route lookup, the
//! credential (an API key, or a JWT already verified once), the scope and model check and the
//! token bucket; and a JWT's first verification per algorithm (what the cache saves).
//!
//!   cargo run --release -p meridian-benches --bin auth_cost

use std::time::Instant;

use axum::http::{HeaderMap, Method};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use meridian_gossip::keys::{key_hash_hex, KeyEntry, KeyLimits, Scope, Scopes};
use meridian_gossip::Catalog;
use meridian_node::auth::jwt::{JwtAlg, JwtIssuer};
use meridian_node::auth::layer::access;
use meridian_node::auth::{unix_secs, AuthConfig, Authenticator, LimitKind, Limits, LimitsConfig};

const SECRET: &str = "a benchmark HS256 secret of 32 bytes or more";
const RSA_PRIVATE: &str = include_str!("../../../node/tests/fixtures/jwt/rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("../../../node/tests/fixtures/jwt/rsa-public.pem");
const ED_PRIVATE: &str = include_str!("../../../node/tests/fixtures/jwt/ed25519-private.pem");
const ED_PUBLIC: &str = include_str!("../../../node/tests/fixtures/jwt/ed25519-public.pem");
const MODEL: &str = "breast-cancer-mlp";

fn issuer(alg: JwtAlg, secret: Option<&str>, pem: Option<&str>) -> JwtIssuer {
    JwtIssuer {
        alg,
        secret: secret.map(str::to_string),
        public_key_pem: pem.map(str::to_string),
        jwks_file: None,
        issuer: "bench".into(),
        audience: None,
    }
}

fn token(alg: Algorithm, key: &EncodingKey, sub: &str) -> anyhow::Result<String> {
    let claims =
        serde_json::json!({ "sub": sub, "iss": "bench", "exp": unix_secs() + 3600, "scope": "predict" });
    Ok(encode(&Header::new(alg), &claims, key)?)
}

/// Nanoseconds per request of `n` requests through access + credential + scope + bucket.
fn per_request(auth: &Authenticator, limits: &Limits, headers: &HeaderMap, n: u32) -> anyhow::Result<f64> {
    let t = Instant::now();
    for _ in 0..n {
        let a = access(&Method::POST, "/api/v1/models/{model}/predict");
        let principal = auth.from_headers(headers)?;
        principal.allow(a.scope.unwrap_or(Scope::Admin), Some(MODEL))?;
        std::hint::black_box(limits.check(&principal, MODEL, LimitKind::Predict)?);
    }
    Ok(t.elapsed().as_nanos() as f64 / f64::from(n))
}

fn bearer(credential: &str) -> anyhow::Result<HeaderMap> {
    let mut h = HeaderMap::new();
    h.insert("authorization", format!("Bearer {credential}").parse()?);
    Ok(h)
}

fn main() -> anyhow::Result<()> {
    let config = AuthConfig {
        jwt: vec![
            issuer(JwtAlg::HS256, Some(SECRET), None),
            issuer(JwtAlg::RS256, None, Some(RSA_PUBLIC)),
            issuer(JwtAlg::EdDSA, None, Some(ED_PUBLIC)),
        ],
        ..AuthConfig::default()
    };
    let auth = Authenticator::new(&config).map_err(anyhow::Error::msg)?;
    let key = format!("mk_0123456789_{}", "5a".repeat(32));
    let mut catalog = Catalog { epoch: 1, ..Catalog::default() };
    let entry = KeyEntry {
        hash: key_hash_hex(&key),
        scopes: Scopes::all(),
        models: None,
        limits: KeyLimits { predict_per_second: Some(100_000_000), batch_per_minute: None },
    };
    catalog.keys.insert("0123456789".into(), entry);
    auth.adopt(&catalog);
    // Every bucket is checked on every request but never empties.
    let limits = Limits::new(LimitsConfig { predict_per_second: 100_000_000, ..LimitsConfig::default() });
    let n = 2_000_000;
    println!("per request (one thread, {n} requests): route, credential, scope + model, token bucket");
    println!("  API key:             {:>7.0} ns", per_request(&auth, &limits, &bearer(&key)?, n)?);
    let headers = bearer(&key)?;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(auth.from_headers(&headers)?);
    }
    println!("    of which the key:    {:>7.0} ns", t.elapsed().as_nanos() as f64 / f64::from(n));
    let principal = auth.from_headers(&headers)?;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(limits.check(&principal, MODEL, LimitKind::Predict)?);
    }
    println!("    of which the bucket: {:>7.0} ns", t.elapsed().as_nanos() as f64 / f64::from(n));
    let hs = EncodingKey::from_secret(SECRET.as_bytes());
    let rs = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes())?;
    let ed = EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes())?;
    let algs = [
        ("HS256", Algorithm::HS256, &hs),
        ("RS256", Algorithm::RS256, &rs),
        ("EdDSA", Algorithm::EdDSA, &ed),
    ];
    for (name, alg, k) in algs {
        let headers = bearer(&token(alg, k, "cached")?)?;
        println!("  JWT {name} (cached): {:>7.0} ns", per_request(&auth, &limits, &headers, n)?);
    }
    println!("first verification of a JWT (the cache's miss), 2,000 distinct tokens:");
    for (name, alg, k) in algs {
        let tokens: Vec<String> =
            (0..2_000).map(|i| token(alg, k, &format!("s{i}"))).collect::<Result<_, _>>()?;
        let t = Instant::now();
        for tk in &tokens {
            std::hint::black_box(auth.authenticate(Some(tk))?);
        }
        println!("  {name}:               {:>7.0} ns", t.elapsed().as_nanos() as f64 / tokens.len() as f64);
    }
    Ok(())
}
