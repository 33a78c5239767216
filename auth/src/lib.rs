//! # synckairos-auth
//!
//! Bearer-token verification shared by the edge worker (wasm) and the
//! gateway (native), so both accept exactly the same tokens (docs/API.md §3):
//! HS256 with a shared secret, and RS256 / ES256 / EdDSA with configured
//! public keys (PEM, or a JWKS where `kid` selects the key). `exp` is
//! required and `nbf` honoured, with a small leeway, against a clock the
//! caller passes in (a Worker has no system clock to read).
//!
//! It fails closed: without a key, and unless auth is explicitly disabled for
//! local development, every request is refused with `AUTH_NOT_CONFIGURED`.
#![deny(missing_docs)]

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use synckairos_core::api::{ApiError, Caller, Role};
use synckairos_core::validate::parse_uuid;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const DEFAULT_LEEWAY_S: u64 = 30;

/// Whether tokens are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// Every `/v1` request needs a valid token (the default).
    Jwt,
    /// No checks at all. Local development only (`AUTH_MODE=disabled`).
    Disabled,
}

/// A configuration mistake, reported at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `AUTH_MODE` is neither `jwt` nor `disabled`.
    #[error("AUTH_MODE must be \"jwt\" or \"disabled\", got {0:?}")]
    Mode(String),
    /// A key could not be read.
    #[error("{var}: {reason}")]
    Key {
        /// The variable.
        var: &'static str,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Clone)]
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Shortest accepted `JWT_SECRET`, in bytes (RFC 7518 §3.2: an HS256 key
/// at least as long as the hash).
pub const MIN_SECRET_BYTES: usize = 32;

/// Largest accepted `JWT_LEEWAY_SECONDS`: clock skew, not a grace period.
pub const MAX_LEEWAY_S: u64 = 60;

/// Verification settings: mode, keys, leeway.
#[derive(Clone)]
pub struct AuthConfig {
    mode: AuthMode,
    keys: Vec<Key>,
    leeway_s: u64,
    claims: ClaimRules,
}

/// What a token's claims must say beyond time and role.
#[derive(Clone, Debug, Default)]
struct ClaimRules {
    /// `JWT_AUDIENCE`: `aud` must be (or contain) it.
    audience: Option<String>,
    /// `JWT_ISSUER`: `iss` must equal it.
    issuer: Option<String>,
    /// `JWT_MAX_LIFETIME_SECONDS`: `exp` at most this far after `iat` (or
    /// after now, for a token without `iat`).
    max_lifetime_s: Option<u64>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("mode", &self.mode)
            .field("keys", &self.keys.len())
            .field("leeway_s", &self.leeway_s)
            .field("claims", &self.claims)
            .finish()
    }
}

fn key_error(var: &'static str, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Key {
        var,
        reason: e.to_string(),
    }
}

fn pem_key(var: &'static str, alg: Algorithm, pem: &str) -> Result<DecodingKey, ConfigError> {
    let pem = pem.as_bytes();
    match alg {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
        Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        other => {
            return Err(key_error(
                var,
                format!("{other:?} is not a public-key algorithm here"),
            ))
        }
    }
    .map_err(|e| key_error(var, e))
}

impl AuthConfig {
    /// Reads the configuration from variables (a Worker's `env`, or the
    /// process environment):
    ///
    /// - `AUTH_MODE`: `jwt` (default) or `disabled`;
    /// - `JWT_SECRET`: an HS256 secret;
    /// - `JWT_PUBLIC_KEY` + `JWT_PUBLIC_KEY_ALG` (`RS256`, `ES256`, `EdDSA`)
    ///   [+ `JWT_PUBLIC_KEY_KID`]: one PEM public key;
    /// - `JWT_JWKS`: a JWKS document (`{"keys": [...]}`), `kid` and `alg` per key;
    /// - `JWT_LEEWAY_SECONDS` (default 30, at most 60);
    /// - `JWT_AUDIENCE`, `JWT_ISSUER`: checked against `aud` and `iss` when
    ///   set (recommended: a token minted for another service is refused);
    /// - `JWT_MAX_LIFETIME_SECONDS`: refuse tokens that live longer.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<AuthConfig, ConfigError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let mode = match get("AUTH_MODE").as_deref().map(str::trim) {
            None | Some("jwt") => AuthMode::Jwt,
            Some("disabled") => AuthMode::Disabled,
            Some(other) => return Err(ConfigError::Mode(other.to_string())),
        };
        let mut keys = Vec::new();
        if let Some(secret) = get("JWT_SECRET") {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(key_error(
                    "JWT_SECRET",
                    "shorter than 32 bytes: an HS256 key needs at least 256 bits",
                ));
            }
            keys.push(Key {
                kid: None,
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.as_bytes()),
            });
        }
        if let Some(pem) = get("JWT_PUBLIC_KEY") {
            let alg = match get("JWT_PUBLIC_KEY_ALG").as_deref() {
                Some("RS256") => Algorithm::RS256,
                Some("ES256") => Algorithm::ES256,
                Some("EdDSA") => Algorithm::EdDSA,
                other => {
                    return Err(key_error(
                        "JWT_PUBLIC_KEY_ALG",
                        format!("must be RS256, ES256 or EdDSA, got {other:?}"),
                    ))
                }
            };
            keys.push(Key {
                kid: get("JWT_PUBLIC_KEY_KID"),
                alg,
                key: pem_key("JWT_PUBLIC_KEY", alg, &pem)?,
            });
        }
        if let Some(jwks) = get("JWT_JWKS") {
            let set: JwkSet = serde_json::from_str(&jwks).map_err(|e| key_error("JWT_JWKS", e))?;
            for jwk in &set.keys {
                let alg = jwk
                    .common
                    .key_algorithm
                    .and_then(|a| a.to_string().parse::<Algorithm>().ok())
                    .ok_or_else(|| key_error("JWT_JWKS", "every key needs an \"alg\""))?;
                keys.push(Key {
                    kid: jwk.common.key_id.clone(),
                    alg,
                    key: DecodingKey::from_jwk(jwk).map_err(|e| key_error("JWT_JWKS", e))?,
                });
            }
        }
        let leeway_s = match get("JWT_LEEWAY_SECONDS") {
            None => DEFAULT_LEEWAY_S,
            Some(v) => v
                .trim()
                .parse()
                .ok()
                .filter(|s| *s <= MAX_LEEWAY_S)
                .ok_or_else(|| key_error("JWT_LEEWAY_SECONDS", "not 0 to 60 seconds"))?,
        };
        let max_lifetime_s =
            match get("JWT_MAX_LIFETIME_SECONDS") {
                None => None,
                Some(v) => Some(v.trim().parse::<u64>().ok().filter(|s| *s > 0).ok_or_else(
                    || {
                        key_error(
                            "JWT_MAX_LIFETIME_SECONDS",
                            "not a positive number of seconds",
                        )
                    },
                )?),
            };
        let claims = ClaimRules {
            audience: get("JWT_AUDIENCE").map(|v| v.trim().to_string()),
            issuer: get("JWT_ISSUER").map(|v| v.trim().to_string()),
            max_lifetime_s,
        };
        Ok(AuthConfig {
            mode,
            keys,
            leeway_s,
            claims,
        })
    }

    /// The mode.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Verifies the `Authorization` header at `now_s` (Unix seconds).
    /// `Ok(None)` only when auth is disabled.
    ///
    /// `local` says the request reached the server over loopback (a worker
    /// called on `localhost`, a native server bound to `127.0.0.1`).
    /// `AUTH_MODE=disabled` takes effect only then: anywhere else the
    /// deployment fails closed, as if no key were configured, so a disabled
    /// configuration that is deployed by mistake serves nobody.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        now_s: u64,
        local: bool,
    ) -> Result<Option<Caller>, ApiError> {
        if self.mode == AuthMode::Disabled {
            return if local {
                Ok(None)
            } else {
                Err(ApiError::AuthNotConfigured)
            };
        }
        if self.keys.is_empty() {
            return Err(ApiError::AuthNotConfigured);
        }
        let token = authorization
            .and_then(|h| {
                let (scheme, token) = h.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized("Missing bearer token"))?;
        self.verify(token, now_s).map(Some)
    }

    /// The leeway on `exp` and `nbf`, in seconds.
    pub fn leeway_s(&self) -> u64 {
        self.leeway_s
    }

    /// Verifies a bare token (the gateway takes it from `?token=`).
    pub fn verify(&self, token: &str, now_s: u64) -> Result<Caller, ApiError> {
        let invalid = ApiError::Unauthorized("Invalid token");
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid.clone())?;
        let candidates = self.keys.iter().filter(|k| {
            k.alg == header.alg
                && match (&header.kid, &k.kid) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        });
        for k in candidates {
            let mut v = Validation::new(k.alg);
            // Time is checked below against the caller's clock.
            v.validate_exp = false;
            v.validate_nbf = false;
            v.required_spec_claims.clear();
            v.validate_aud = false;
            if let Ok(data) = jsonwebtoken::decode::<Claims>(token, &k.key, &v) {
                return data.claims.into_caller(now_s, self.leeway_s, &self.claims);
            }
        }
        Err(invalid)
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    role: Option<String>,
    sid: Option<String>,
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    iss: Option<String>,
    /// A string or an array of strings.
    aud: Option<serde_json::Value>,
}

impl Claims {
    fn into_caller(
        self,
        now_s: u64,
        leeway_s: u64,
        rules: &ClaimRules,
    ) -> Result<Caller, ApiError> {
        let exp = self
            .exp
            .ok_or(ApiError::Unauthorized("Token has no expiry"))?;
        if let Some(max) = rules.max_lifetime_s {
            let from = self
                .iat
                .unwrap_or(now_s)
                .min(now_s.saturating_add(leeway_s));
            if exp.saturating_sub(from) > max {
                return Err(ApiError::Unauthorized("Token lifetime exceeds the maximum"));
            }
        }
        if let Some(want) = &rules.issuer {
            if self.iss.as_deref() != Some(want.as_str()) {
                return Err(ApiError::Unauthorized("Token issuer is not accepted"));
            }
        }
        if let Some(want) = &rules.audience {
            let ok = match &self.aud {
                Some(serde_json::Value::String(a)) => a == want,
                Some(serde_json::Value::Array(list)) => {
                    list.iter().any(|a| a.as_str() == Some(want))
                }
                _ => false,
            };
            if !ok {
                return Err(ApiError::Unauthorized("Token audience is not accepted"));
            }
        }
        // RFC 7519 §4.1.4: not accepted on or after `exp`. The same instant
        // closes a socket that holds the token (the gateway's timer fires at
        // (exp + leeway) s), so a token is never accepted only to be closed
        // with 4001 a moment later.
        if now_s >= exp.saturating_add(leeway_s) {
            return Err(ApiError::Unauthorized("Token expired"));
        }
        if let Some(nbf) = self.nbf {
            if now_s.saturating_add(leeway_s) < nbf {
                return Err(ApiError::Unauthorized("Token not yet valid"));
            }
        }
        let role = self
            .role
            .as_deref()
            .and_then(Role::parse)
            .ok_or(ApiError::Unauthorized("Token has no valid role"))?;
        let sub = self
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(ApiError::Unauthorized("Token has no subject"))?;
        let sid = match self.sid {
            None => None,
            Some(s) => {
                Some(parse_uuid(&s).ok_or(ApiError::Unauthorized("Token sid is not a UUID"))?)
            }
        };
        Ok(Caller {
            sub,
            role,
            sid,
            exp: Some(exp),
        })
    }
}
