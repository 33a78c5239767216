//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256(key,
//! "{id}.{timestamp}.{body}")>`, one per configured secret.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// An endpoint's signing keys (1, or 2 while rotating). `Debug` shows only
/// how many.
#[derive(Clone)]
pub struct Secrets(Vec<Vec<u8>>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} keys, redacted)", self.0.len())
    }
}

impl Secrets {
    /// Parses `whsec_<base64 key>` values. An error names the secret by its
    /// position, never by its value.
    pub fn parse(values: &[String]) -> Result<Secrets, String> {
        let mut keys = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            let b64 = v
                .strip_prefix("whsec_")
                .ok_or_else(|| format!("secret #{i} must start with whsec_"))?;
            let key = STANDARD
                .decode(b64)
                .map_err(|_| format!("secret #{i} is not whsec_ followed by base64"))?;
            if key.len() < 24 || key.len() > 64 {
                return Err(format!(
                    "secret #{i} must decode to 24 to 64 bytes, got {}",
                    key.len()
                ));
            }
            keys.push(key);
        }
        Ok(Secrets(keys))
    }

    /// Keys from raw bytes.
    pub fn from_keys(keys: Vec<Vec<u8>>) -> Secrets {
        Secrets(keys)
    }

    /// The `webhook-signature` header value: `v1,<sig>` per key, space-separated.
    pub fn header(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        self.0
            .iter()
            .map(|k| format!("v1,{}", sign(k, id, timestamp, body)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// base64 of HMAC-SHA256(`key`, `"{id}.{timestamp}.{body}"`).
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // The example of the Standard Webhooks specification's reference
        // libraries (secret, id, timestamp, payload, expected signature).
        let s = Secrets::parse(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()]).unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            s.header("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let two = Secrets::parse(&[
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        ])
        .unwrap();
        assert_eq!(two.header("i", 1, b"b").split(' ').count(), 2);
        assert!(Secrets::parse(&["nope".into()]).is_err());
        assert!(Secrets::parse(&["whsec_c2hvcnQ=".into()]).is_err());
    }
}
