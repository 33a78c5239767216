//! Tokens signed with each supported algorithm, and every way one can be
//! refused. The keys under tests/keys are throwaway test keys.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::collections::HashMap;
use synckairos_auth::{AuthConfig, AuthMode};
use synckairos_core::api::{ApiError, Caller, Role};

const NOW: u64 = 1_795_455_546;
const SID: &str = "0b7d7a2e-8c4f-4d3b-9a51-6c2e1f0d9b11";

fn config(vars: &[(&str, &str)]) -> AuthConfig {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    AuthConfig::from_vars(|k| map.get(k).cloned()).expect("valid config")
}

fn claims(role: &str) -> Value {
    json!({"sub": "user-1", "role": role, "sid": SID.to_uppercase(), "exp": NOW + 60})
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    encode(&header, claims, key).expect("sign")
}

fn hs(secret: &str, claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()),
        None,
        claims,
    )
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn key(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn hs256_tokens_verify_and_carry_the_caller() {
    let c = config(&[("JWT_SECRET", "s3cret-s3cret-s3cret-s3cret-s3cret")]);
    let caller = c
        .authenticate(
            Some(&bearer(&hs(
                "s3cret-s3cret-s3cret-s3cret-s3cret",
                &claims("participant"),
            ))),
            NOW,
            false,
        )
        .unwrap();
    assert_eq!(
        caller,
        Some(Caller {
            sub: "user-1".into(),
            role: Role::Participant,
            sid: Some(SID.into()),
            exp: Some(NOW + 60),
        })
    );
    // Scheme is case-insensitive.
    assert!(c
        .authenticate(
            Some(&format!(
                "bearer {}",
                hs("s3cret-s3cret-s3cret-s3cret-s3cret", &claims("viewer"))
            )),
            NOW,
            false
        )
        .is_ok());
}

#[test]
fn refusals() {
    let c = config(&[("JWT_SECRET", "s3cret-s3cret-s3cret-s3cret-s3cret")]);
    let refused = |header: Option<String>, now: u64| -> ApiError {
        c.authenticate(header.as_deref(), now, false).unwrap_err()
    };
    let good = hs("s3cret-s3cret-s3cret-s3cret-s3cret", &claims("host"));
    assert_eq!(
        refused(None, NOW),
        ApiError::Unauthorized("Missing bearer token")
    );
    assert_eq!(
        refused(Some(good.clone()), NOW),
        ApiError::Unauthorized("Missing bearer token")
    );
    assert_eq!(
        refused(Some("Bearer ".into()), NOW),
        ApiError::Unauthorized("Missing bearer token")
    );
    assert_eq!(
        refused(Some(bearer("garbage")), NOW),
        ApiError::Unauthorized("Invalid token")
    );
    assert_eq!(
        refused(Some(bearer(&hs("other", &claims("host")))), NOW),
        ApiError::Unauthorized("Invalid token")
    );
    // exp with leeway (30 s by default): accepted up to the second before
    // exp + leeway, not at it (RFC 7519: "on or after").
    assert!(c
        .authenticate(Some(&bearer(&good)), NOW + 60 + 29, false)
        .is_ok());
    assert_eq!(
        refused(Some(bearer(&good)), NOW + 60 + 30),
        ApiError::Unauthorized("Token expired")
    );
    let mut no_exp = claims("host");
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        refused(
            Some(bearer(&hs("s3cret-s3cret-s3cret-s3cret-s3cret", &no_exp))),
            NOW
        ),
        ApiError::Unauthorized("Token has no expiry")
    );
    let mut later = claims("host");
    later["nbf"] = json!(NOW + 100);
    assert_eq!(
        refused(
            Some(bearer(&hs("s3cret-s3cret-s3cret-s3cret-s3cret", &later))),
            NOW
        ),
        ApiError::Unauthorized("Token not yet valid")
    );
    assert!(c
        .authenticate(
            Some(&bearer(&hs("s3cret-s3cret-s3cret-s3cret-s3cret", &later))),
            NOW + 71,
            false
        )
        .is_ok());
    assert_eq!(
        refused(
            Some(bearer(&hs(
                "s3cret-s3cret-s3cret-s3cret-s3cret",
                &claims("root")
            ))),
            NOW
        ),
        ApiError::Unauthorized("Token has no valid role")
    );
    let mut bad_sid = claims("host");
    bad_sid["sid"] = json!("x");
    assert_eq!(
        refused(
            Some(bearer(&hs("s3cret-s3cret-s3cret-s3cret-s3cret", &bad_sid))),
            NOW
        ),
        ApiError::Unauthorized("Token sid is not a UUID")
    );
    let e = ApiError::Unauthorized("Invalid token");
    assert_eq!((e.status(), e.code()), (401, "UNAUTHORIZED"));
}

#[test]
fn fails_closed_without_keys_and_opens_only_when_disabled_over_loopback() {
    let none = config(&[]);
    assert_eq!(none.mode(), AuthMode::Jwt);
    let e = none.authenticate(None, NOW, false).unwrap_err();
    assert_eq!((e.status(), e.code()), (500, "AUTH_NOT_CONFIGURED"));
    let disabled = config(&[("AUTH_MODE", "disabled")]);
    assert_eq!(disabled.authenticate(None, NOW, true), Ok(None));
    // Disabled but reached from outside (a deployed worker, a server bound to
    // a public address): closed, as if no key were configured.
    let e = disabled.authenticate(None, NOW, false).unwrap_err();
    assert_eq!(e.code(), "AUTH_NOT_CONFIGURED");
    assert!(AuthConfig::from_vars(|k| (k == "AUTH_MODE").then(|| "off".to_string())).is_err());
}

#[test]
fn rs256_es256_and_eddsa_pem_keys() {
    for (alg, name, private) in [
        (
            Algorithm::RS256,
            "RS256",
            EncodingKey::from_rsa_pem(key("rsa.key").as_bytes()).unwrap(),
        ),
        (
            Algorithm::ES256,
            "ES256",
            EncodingKey::from_ec_pem(key("ec.key").as_bytes()).unwrap(),
        ),
        (
            Algorithm::EdDSA,
            "EdDSA",
            EncodingKey::from_ed_pem(key("ed.key").as_bytes()).unwrap(),
        ),
    ] {
        let public = key(match name {
            "RS256" => "rsa.pub",
            "ES256" => "ec.pub",
            _ => "ed.pub",
        });
        let c = config(&[("JWT_PUBLIC_KEY", &public), ("JWT_PUBLIC_KEY_ALG", name)]);
        let token = sign(alg, &private, None, &claims("admin"));
        let caller = c
            .authenticate(Some(&bearer(&token)), NOW, false)
            .unwrap()
            .unwrap();
        assert_eq!(caller.role, Role::Admin, "{name}");
        // An HS256 token "signed" with the public key text is not accepted
        // (algorithm confusion).
        let forged = hs(&public, &claims("admin"));
        assert!(
            c.authenticate(Some(&bearer(&forged)), NOW, false).is_err(),
            "{name}"
        );
    }
}

#[test]
fn a_jwks_selects_the_key_by_kid() {
    let rsa_public = key("rsa.pub");
    // Build the JWK of the RSA test key from its PEM via openssl's modulus/exponent.
    let der = pem_to_der(&rsa_public);
    let (n, e) = rsa_n_e(&der);
    let jwks = json!({"keys": [
        {"kty": "oct", "kid": "hs-1", "alg": "HS256", "k": b64url(b"jwks-secret")},
        {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "n": b64url(&n), "e": b64url(&e)}
    ]})
    .to_string();
    let c = config(&[("JWT_JWKS", &jwks)]);
    let rsa = EncodingKey::from_rsa_pem(key("rsa.key").as_bytes()).unwrap();
    let t = sign(Algorithm::RS256, &rsa, Some("rsa-1"), &claims("viewer"));
    assert_eq!(
        c.authenticate(Some(&bearer(&t)), NOW, false)
            .unwrap()
            .unwrap()
            .role,
        Role::Viewer
    );
    let t = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"jwks-secret"),
        Some("hs-1"),
        &claims("host"),
    );
    assert_eq!(
        c.authenticate(Some(&bearer(&t)), NOW, false)
            .unwrap()
            .unwrap()
            .role,
        Role::Host
    );
    // A kid the set does not have is refused.
    let t = sign(Algorithm::RS256, &rsa, Some("rsa-2"), &claims("viewer"));
    assert!(c.authenticate(Some(&bearer(&t)), NOW, false).is_err());
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0);
    for c in body.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        buf = buf << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

/// Modulus and exponent of a SubjectPublicKeyInfo RSA key (tiny DER walk).
fn rsa_n_e(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    fn read(d: &[u8], i: &mut usize) -> (u8, usize, usize) {
        let tag = d[*i];
        let mut len = d[*i + 1] as usize;
        *i += 2;
        if len & 0x80 != 0 {
            let n = len & 0x7f;
            len = d[*i..*i + n].iter().fold(0, |a, b| a << 8 | *b as usize);
            *i += n;
        }
        let start = *i;
        (tag, start, len)
    }
    let mut i = 0;
    read(der, &mut i); // SEQUENCE spki
    let (_, s, l) = read(der, &mut i); // SEQUENCE algorithm
    i = s + l;
    let (_, s, _) = read(der, &mut i); // BIT STRING
    i = s + 1; // unused-bits byte
    read(der, &mut i); // SEQUENCE RSAPublicKey
    let (_, s, l) = read(der, &mut i);
    let n = der[s..s + l]
        .iter()
        .skip_while(|b| **b == 0)
        .copied()
        .collect();
    i = s + l;
    let (_, s, l) = read(der, &mut i);
    (n, der[s..s + l].to_vec())
}

#[test]
fn weak_secrets_and_long_leeways_are_refused_at_start() {
    let refused = |vars: &[(&str, &str)], var: &str| match AuthConfig::from_vars(|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }) {
        Err(e) => assert!(e.to_string().contains(var), "{e}"),
        Ok(_) => panic!("{vars:?} was accepted"),
    };
    let long = "0123456789abcdef0123456789abcdef"; // 32 bytes: the least accepted
    refused(&[("JWT_SECRET", &long[1..])], "JWT_SECRET");
    refused(
        &[("JWT_SECRET", long), ("JWT_LEEWAY_SECONDS", "61")],
        "JWT_LEEWAY_SECONDS",
    );
    refused(
        &[("JWT_SECRET", long), ("JWT_LEEWAY_SECONDS", "-1")],
        "JWT_LEEWAY_SECONDS",
    );
    let ok = config(&[("JWT_SECRET", long), ("JWT_LEEWAY_SECONDS", "60")]);
    assert_eq!(ok.mode(), AuthMode::Jwt);
}

#[test]
fn audience_issuer_and_lifetime_are_checked_when_configured() {
    const KEY: &str = "0123456789abcdef0123456789abcdef";
    let c = config(&[
        ("JWT_SECRET", KEY),
        ("JWT_AUDIENCE", "synckairos"),
        ("JWT_ISSUER", "https://id.example"),
        ("JWT_MAX_LIFETIME_SECONDS", "3600"),
    ]);
    let with = |extra: Value| {
        let mut cl = claims("viewer");
        for (k, v) in extra.as_object().unwrap() {
            cl[k] = v.clone();
        }
        c.verify(&hs(KEY, &cl), NOW)
    };
    let good = json!({"aud": "synckairos", "iss": "https://id.example", "iat": NOW});
    assert!(with(good.clone()).is_ok());
    assert!(with(json!({"aud": ["other", "synckairos"], "iss": "https://id.example"})).is_ok());
    for (bad, why) in [
        (
            json!({"aud": "other", "iss": "https://id.example"}),
            "audience",
        ),
        (json!({"iss": "https://id.example"}), "audience"),
        (json!({"aud": "synckairos"}), "issuer"),
        (
            json!({"aud": "synckairos", "iss": "https://evil.example"}),
            "issuer",
        ),
        (
            json!({"aud": "synckairos", "iss": "https://id.example", "iat": NOW, "exp": NOW + 3601}),
            "lifetime",
        ),
        // No iat: the lifetime counts from now; a future iat counts from now too.
        (
            json!({"aud": "synckairos", "iss": "https://id.example", "exp": NOW + 7200}),
            "lifetime",
        ),
        (
            json!({"aud": "synckairos", "iss": "https://id.example", "iat": NOW + 7000, "exp": NOW + 7200}),
            "lifetime",
        ),
    ] {
        let e = with(bad.clone()).unwrap_err();
        assert_eq!(e.status(), 401, "{bad}");
        assert!(e.body().contains(why), "{bad}: {}", e.body());
    }
    // Without the settings, aud and iss are not required.
    let open = config(&[("JWT_SECRET", KEY)]);
    assert!(open.verify(&hs(KEY, &claims("viewer")), NOW).is_ok());
}
