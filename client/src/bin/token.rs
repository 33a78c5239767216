//! `token`: mints a JWT for a local stack, so trying the API by hand needs
//! no other tool.
//!
//! `token [--role admin|host|participant|viewer] [--sub ID] [--sid SESSION]
//! [--ttl-secs N] [--secret-file PATH]`; the HS256 secret is `JWT_SECRET`,
//! else the file (`scripts/up.sh` keeps it in `.run/jwt-secret`). Prints the
//! token alone, for `curl -H "Authorization: Bearer $(token)"`.

use anyhow::{bail, Context};
use synckairos_core::api::Role;
use synckairos_core::validate::parse_uuid;

const USAGE: &str = "usage: token [--role admin|host|participant|viewer] [--sub ID] \
[--sid SESSION] [--ttl-secs N] [--secret-file PATH]";

fn main() -> anyhow::Result<()> {
    let (mut role, mut sub, mut sid, mut ttl) = ("admin".to_string(), None, None, 3600u64);
    let mut secret_file = ".run/jwt-secret".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--role" => role = value()?,
            "--sub" => sub = Some(value()?),
            "--sid" => sid = Some(value()?),
            "--ttl-secs" => ttl = value()?.parse().context("--ttl-secs takes whole seconds")?,
            "--secret-file" => secret_file = value()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if Role::parse(&role).is_none() {
        bail!("--role {role:?}: one of admin, host, participant, viewer");
    }
    let sid = match sid {
        Some(s) => Some(parse_uuid(&s).with_context(|| format!("--sid {s:?} is not a UUID"))?),
        None => None,
    };
    if ttl == 0 || ttl > 30 * 86_400 {
        bail!("--ttl-secs {ttl}: from 1 to 2592000 (30 days)");
    }
    let secret = match std::env::var("JWT_SECRET") {
        Ok(s) if !s.trim().is_empty() => s,
        _ => std::fs::read_to_string(&secret_file)
            .with_context(|| format!("no JWT_SECRET and no secret in {secret_file}"))?
            .trim()
            .to_string(),
    };
    let sub = sub.unwrap_or_else(|| role.clone());
    println!(
        "{}",
        synckairos_client::mint_token(&secret, &role, &sub, sid.as_deref(), ttl)?
    );
    Ok(())
}
