//! Which Redis a native service talks to: one server, or a Redis Cluster.
//!
//! The one declaration every native service (engine, gateway, native server,
//! audit consumer) reads:
//!
//! - `REDIS_URL=redis://[user:password@]host:port[/0]` (or `rediss://` for
//!   TLS): a single server (or a proxy), as before; it may also hold the
//!   cluster form below.
//! - `REDIS_CLUSTER_URLS=redis://host1:6379,redis://host2:6379`: the seed
//!   nodes of a Redis Cluster, comma-separated. The client reads the whole
//!   topology from any seed that answers, so a few seeds are enough. Every
//!   seed has the same scheme and credentials.
//! - `redis+cluster://[user:password@]host1:port,host2:port[/0][?…]` (TLS:
//!   `rediss+cluster://`): the same seeds in one URL, for a setting that
//!   takes one URL; the credentials, path and query apply to every seed.
//!
//! **When both are set, `REDIS_CLUSTER_URLS` wins** and `REDIS_URL` is not
//! read: the cluster list is the more specific setting, and a deployment that
//! adds it to an existing `REDIS_URL` means the cluster. A cluster has only
//! database 0. Error messages show URLs with their passwords redacted
//! ([`synckairos_core::redact::redact_url`]).

use std::fmt;

use synckairos_core::redact::redact_url;

/// The environment variable of a single server's URL.
pub const REDIS_URL: &str = "REDIS_URL";
/// The environment variable of a cluster's comma-separated seed URLs.
pub const REDIS_CLUSTER_URLS: &str = "REDIS_CLUSTER_URLS";

/// Where Redis is.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (`redis://` or `rediss://`, or `unix://`).
    Single(String),
    /// A Redis Cluster, reached through these seed URLs (`redis://` or
    /// `rediss://`, at least one).
    Cluster(Vec<String>),
}

/// Why a Redis target was refused. URLs in it are redacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Neither variable is set.
    #[error("set {REDIS_URL} (one server) or {REDIS_CLUSTER_URLS} (a cluster's seed URLs)")]
    Missing,
    /// A variable is set but empty (or only commas and spaces).
    #[error("{var} is empty")]
    Empty {
        /// The variable.
        var: &'static str,
    },
    /// A URL is not a Redis URL.
    #[error("{var}: {url} is not a Redis URL: {reason}")]
    BadUrl {
        /// Where it came from.
        var: &'static str,
        /// The URL, redacted.
        url: String,
        /// Why.
        reason: String,
    },
    /// The seeds do not describe one cluster consistently.
    #[error("{var}: {reason}")]
    BadCluster {
        /// Where it came from.
        var: &'static str,
        /// Why.
        reason: String,
    },
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Redacted: `redis://h:6379/` or `cluster[redis://a:1/, redis://b:2/]`.
impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisTarget::Single(url) => f.write_str(&redact_url(url)),
            RedisTarget::Cluster(seeds) => {
                let seeds: Vec<String> = seeds.iter().map(|s| redact_url(s)).collect();
                write!(f, "cluster[{}]", seeds.join(", "))
            }
        }
    }
}

impl RedisTarget {
    /// Reads [`REDIS_CLUSTER_URLS`] and [`REDIS_URL`] from the environment
    /// (the cluster list wins when both are set).
    pub fn from_env() -> Result<RedisTarget, TargetError> {
        let var = |name| std::env::var(name).ok();
        RedisTarget::from_vars(
            var(REDIS_URL).as_deref(),
            var(REDIS_CLUSTER_URLS).as_deref(),
        )
    }

    /// The target given the values of [`REDIS_URL`] and
    /// [`REDIS_CLUSTER_URLS`] (`None` when unset); the cluster list wins
    /// when both are set.
    pub fn from_vars(
        redis_url: Option<&str>,
        cluster_urls: Option<&str>,
    ) -> Result<RedisTarget, TargetError> {
        match (cluster_urls, redis_url) {
            (Some(list), _) => {
                let seeds: Vec<&str> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                if seeds.is_empty() {
                    return Err(TargetError::Empty {
                        var: REDIS_CLUSTER_URLS,
                    });
                }
                for s in &seeds {
                    if s.contains("+cluster://") {
                        return Err(TargetError::BadUrl {
                            var: REDIS_CLUSTER_URLS,
                            url: redact_url(s),
                            reason: "list plain redis:// or rediss:// seed URLs here".into(),
                        });
                    }
                }
                cluster(
                    REDIS_CLUSTER_URLS,
                    seeds.into_iter().map(str::to_string).collect(),
                )
            }
            (None, Some(url)) => RedisTarget::parse_var(REDIS_URL, url),
            (None, None) => Err(TargetError::Missing),
        }
    }

    /// Parses one URL: `redis+cluster://…`/`rediss+cluster://…` is a
    /// cluster, anything else a single server.
    pub fn parse(url: &str) -> Result<RedisTarget, TargetError> {
        RedisTarget::parse_var(REDIS_URL, url)
    }

    fn parse_var(var: &'static str, url: &str) -> Result<RedisTarget, TargetError> {
        let url = url.trim();
        if url.is_empty() {
            return Err(TargetError::Empty { var });
        }
        let cluster_scheme = [
            ("redis+cluster://", "redis://"),
            ("rediss+cluster://", "rediss://"),
        ]
        .into_iter()
        .find(|(c, _)| url.len() >= c.len() && url[..c.len()].eq_ignore_ascii_case(c));
        let Some((prefix, scheme)) = cluster_scheme else {
            check_url(var, url)?;
            return Ok(RedisTarget::Single(url.to_string()));
        };
        let rest = &url[prefix.len()..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (userinfo, hosts) = match authority.rfind('@') {
            Some(at) => (&authority[..=at], &authority[at + 1..]),
            None => ("", authority),
        };
        let seeds: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| format!("{scheme}{userinfo}{h}{tail}"))
            .collect();
        if seeds.is_empty() {
            return Err(TargetError::BadUrl {
                var,
                url: redact_url(url),
                reason: "no host:port".into(),
            });
        }
        cluster(var, seeds)
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisTarget::Cluster(_))
    }
}

/// What the checks need of one URL.
struct Parsed {
    /// `rediss://` (or `valkeys://`).
    tls: bool,
    /// A TCP address (not `unix://`).
    tcp: bool,
    /// The database (path), 0 when none.
    db: i64,
    /// `user:password@` or empty.
    userinfo: String,
}

/// Checks that `url` is a Redis URL: a known scheme, a host, a numeric port
/// and database. Done here, not by redis-rs, so the answer does not depend
/// on which redis-rs features (TLS) a binary was built with.
fn check_url(var: &'static str, url: &str) -> Result<Parsed, TargetError> {
    let bad = |reason: &str| TargetError::BadUrl {
        var,
        url: redact_url(url),
        reason: reason.to_string(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected redis://host:port or rediss://host:port"))?;
    let scheme = scheme.to_ascii_lowercase();
    let tls = match scheme.as_str() {
        "redis" | "valkey" => false,
        "rediss" | "valkeys" => true,
        "unix" | "redis+unix" | "valkey+unix" => {
            return Ok(Parsed {
                tls: false,
                tcp: false,
                db: 0,
                userinfo: String::new(),
            })
        }
        _ => return Err(bad("the scheme is not redis://, rediss:// or unix://")),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, host_port) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (host_port, None),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if let Some(p) = port {
        p.parse::<u16>()
            .map_err(|_| bad("the port is not a number"))?;
    }
    let path = tail.split(['?', '#']).next().unwrap_or("");
    let db = match path.trim_start_matches('/') {
        "" => 0,
        d => d.parse().map_err(|_| bad("the database is not a number"))?,
    };
    Ok(Parsed {
        tls,
        tcp: true,
        db,
        userinfo: userinfo.to_string(),
    })
}

/// Checks the seeds of one cluster: TCP URLs, one scheme, one set of
/// credentials, database 0.
fn cluster(var: &'static str, seeds: Vec<String>) -> Result<RedisTarget, TargetError> {
    let mut first: Option<Parsed> = None;
    for s in &seeds {
        let p = check_url(var, s)?;
        if !p.tcp {
            return Err(TargetError::BadUrl {
                var,
                url: redact_url(s),
                reason: "a cluster seed is a TCP address (redis:// or rediss://)".into(),
            });
        }
        if p.db != 0 {
            return Err(TargetError::BadUrl {
                var,
                url: redact_url(s),
                reason: "a Redis Cluster has only database 0".into(),
            });
        }
        if let Some(f) = &first {
            if f.tls != p.tls {
                return Err(TargetError::BadCluster {
                    var,
                    reason: "the seeds mix redis:// and rediss://".into(),
                });
            }
            if f.userinfo != p.userinfo {
                return Err(TargetError::BadCluster {
                    var,
                    reason: "the seeds have different user names or passwords".into(),
                });
            }
        } else {
            first = Some(p);
        }
    }
    Ok(RedisTarget::Cluster(seeds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster_of(seeds: &[&str]) -> RedisTarget {
        RedisTarget::Cluster(seeds.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn a_plain_url_is_a_single_server() {
        for url in [
            "redis://127.0.0.1:6379/",
            "redis://:pw@h:6379/2",
            "rediss://u:pw@h:6380",
            "unix:///run/redis.sock",
        ] {
            assert_eq!(RedisTarget::parse(url), Ok(RedisTarget::Single(url.into())));
        }
        assert_eq!(
            RedisTarget::from_vars(Some("redis://h:1/"), None),
            Ok(RedisTarget::Single("redis://h:1/".into()))
        );
    }

    #[test]
    fn the_cluster_url_form_gives_one_seed_per_host() {
        assert_eq!(
            RedisTarget::parse("redis+cluster://a:7000,b:7001"),
            Ok(cluster_of(&["redis://a:7000", "redis://b:7001"]))
        );
        assert_eq!(
            RedisTarget::parse("rediss+cluster://u:pw@a:7000, b:7001/0?protocol=resp3"),
            Ok(cluster_of(&[
                "rediss://u:pw@a:7000/0?protocol=resp3",
                "rediss://u:pw@b:7001/0?protocol=resp3",
            ]))
        );
        assert_eq!(
            RedisTarget::from_vars(Some("REDIS+CLUSTER://a:1"), None),
            Ok(cluster_of(&["redis://a:1"]))
        );
    }

    #[test]
    fn the_cluster_list_wins_over_redis_url() {
        let t = RedisTarget::from_vars(
            Some("redis://single:6379/"),
            Some(" redis://a:7000/ ,redis://b:7001/,"),
        );
        assert_eq!(t, Ok(cluster_of(&["redis://a:7000/", "redis://b:7001/"])));
        assert!(t.unwrap().is_cluster());
    }

    #[test]
    fn refusals_are_clear() {
        assert_eq!(
            RedisTarget::from_vars(None, None),
            Err(TargetError::Missing)
        );
        assert_eq!(
            RedisTarget::from_vars(None, Some(" , ")),
            Err(TargetError::Empty {
                var: REDIS_CLUSTER_URLS
            })
        );
        assert_eq!(
            RedisTarget::from_vars(Some(""), None),
            Err(TargetError::Empty { var: REDIS_URL })
        );
        let err = |r: Result<RedisTarget, TargetError>| r.unwrap_err().to_string();
        assert!(err(RedisTarget::parse("http://h:1")).contains("not a Redis URL"));
        assert!(err(RedisTarget::parse("redis+cluster://")).contains("no host:port"));
        assert!(err(RedisTarget::parse("redis+cluster://a:1,b:2/3")).contains("only database 0"));
        assert!(err(RedisTarget::from_vars(
            None,
            Some("redis://a:1,rediss://b:2")
        ))
        .contains("mix"));
        assert!(err(RedisTarget::from_vars(None, Some("unix:///s.sock"))).contains("TCP address"));
        assert!(err(RedisTarget::from_vars(
            None,
            Some("redis://:one@a:1,redis://:two@b:2")
        ))
        .contains("password"));
        assert!(
            err(RedisTarget::from_vars(None, Some("redis+cluster://a:1")))
                .contains("plain redis://")
        );
    }

    #[test]
    fn passwords_never_show() {
        for r in [
            RedisTarget::parse("http://u:hunter2@h:1"),
            RedisTarget::parse("redis+cluster://u:hunter2@a:1/5"),
            RedisTarget::from_vars(None, Some("redis://:hunter2@a:1,rediss://:hunter2@b:2")),
            RedisTarget::from_vars(None, Some("redis://:hunter2@a:1/4")),
        ] {
            let e = r.unwrap_err();
            assert!(!e.to_string().contains("hunter2"), "{e}");
            assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
        }
        let t = RedisTarget::parse("redis+cluster://u:hunter2@a:1,b:2").unwrap();
        assert!(!t.to_string().contains("hunter2"), "{t}");
        assert!(!format!("{t:?}").contains("hunter2"));
        assert!(t.to_string().contains("a:1"));
    }
}
