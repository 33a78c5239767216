//! Credentials never reach an error message, a log line, a panic or a
//! `/ready` body. Two tools, used wherever a URL or a secret could be
//! formatted:
//!
//! - [`redact_url`]: a connection URL with its password (and any
//!   `password=`/`token=`-like query parameter) replaced by [`REDACTED`],
//!   keeping what helps an operator: scheme, user, host, port, path;
//! - [`Secret`] and [`SecretUrl`]: a value whose `Debug` (and, for the URL,
//!   `Display`) never shows the secret part; only `expose()` does, at the one
//!   place that sends it.

use std::fmt;

/// What stands in for a hidden value.
pub const REDACTED: &str = "[redacted]";

/// Query parameters whose value is a credential (compared case-insensitively).
const SECRET_PARAMS: [&str; 7] = [
    "password",
    "pass",
    "passwd",
    "pwd",
    "token",
    "secret",
    "sslpassword",
];

/// `url` with its password hidden: `redis://user:pw@host:6379/0` becomes
/// `redis://user:[redacted]@host:6379/0`, a lone userinfo without a colon
/// (`redis://token@host`, a token in the user's place) becomes
/// `redis://[redacted]@host`, and the values of credential query parameters
/// (`?password=…`, `?token=…`) are hidden too. Text that is not a URL is
/// returned as is (it may be a host name).
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let (scheme, rest) = (&url[..scheme_end], &url[scheme_end + 3..]);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = match authority.rfind('@') {
        None => authority.to_string(),
        Some(at) => match authority[..at].split_once(':') {
            Some((user, _password)) => format!("{user}:{REDACTED}@{}", &authority[at + 1..]),
            None => format!("{REDACTED}@{}", &authority[at + 1..]),
        },
    };
    let tail = match tail.split_once('?') {
        None => tail.to_string(),
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s)) => {
                        format!("{k}={REDACTED}")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
            format!("{path}?{}{fragment}", query.join("&"))
        }
    };
    format!("{scheme}://{host}{tail}")
}

/// A secret value (a token, a JWT secret): `Debug` prints [`REDACTED`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A connection URL that may hold credentials (`REDIS_URL`,
/// `DATABASE_URL`): `Debug` and `Display` show [`redact_url`] of it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps `url`.
    pub fn new(url: impl Into<String>) -> SecretUrl {
        SecretUrl(url.into())
    }

    /// The URL itself, for the one place that connects with it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl From<String> for SecretUrl {
    fn from(url: String) -> SecretUrl {
        SecretUrl(url)
    }
}

impl std::str::FromStr for SecretUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<SecretUrl, Self::Err> {
        Ok(SecretUrl(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_and_the_rest_kept() {
        for (url, shown) in [
            (
                "redis://user:pa55@cache.internal:6379/0",
                "redis://user:[redacted]@cache.internal:6379/0",
            ),
            (
                "rediss://default:AbC-t0ken@eu1.example.io:6379",
                "rediss://default:[redacted]@eu1.example.io:6379",
            ),
            // A password holding '@' and ':' is hidden whole.
            (
                "redis://:p@ss:w0rd@10.0.0.1:6379/",
                "redis://:[redacted]@10.0.0.1:6379/",
            ),
            // A token alone in the user's place.
            ("redis://t0ken@host:6379", "redis://[redacted]@host:6379"),
            (
                "postgres://app:s3cr3t@db:5432/audit?sslmode=require",
                "postgres://app:[redacted]@db:5432/audit?sslmode=require",
            ),
            (
                "postgres://db/audit?user=app&password=s3cr3t&sslmode=require",
                "postgres://db/audit?user=app&password=[redacted]&sslmode=require",
            ),
            (
                "https://h.example/x?Token=abc#frag",
                "https://h.example/x?Token=[redacted]#frag",
            ),
            ("redis://127.0.0.1:6379/", "redis://127.0.0.1:6379/"),
            ("https://db.example", "https://db.example"),
            ("not a url", "not a url"),
            ("", ""),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn nothing_secret_survives_any_formatting() {
        let url = SecretUrl::new("redis://u:hunter2@cache:6379/");
        for text in [format!("{url}"), format!("{url:?}"), format!("{url:#?}")] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("cache:6379"), "{text}");
        }
        assert_eq!(url.expose(), "redis://u:hunter2@cache:6379/");
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(s.expose(), "hunter2");
    }
}
