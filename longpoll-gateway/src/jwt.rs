//! HS256 JSON Web Tokens: signing Grip-Sig, checking publishers' tokens.
//!
//! Only HS256 is used on either side, so this is HMAC-SHA256 over the
//! base64url header and claims (RFC 7519), with RustCrypto's `hmac` checking
//! the signature in constant time; a general JWT crate would bring RSA and EC
//! code the gateway never runs.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Why a token was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum JwtError {
    Malformed,
    Algorithm,
    Signature,
    NoExpiry,
    Expired,
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JwtError::Malformed => "the token is not a well-formed JWT",
            JwtError::Algorithm => "the token is not signed with HS256",
            JwtError::Signature => "the token's signature does not match the key",
            JwtError::NoExpiry => "the token has no exp claim",
            JwtError::Expired => "the token has expired",
        })
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// A token with these claims, signed with `key`.
pub fn sign(claims: &Map<String, Value>, key: &[u8]) -> String {
    let claims = serde_json::to_vec(claims).expect("claims serialize");
    let mut token = URL_SAFE_NO_PAD.encode(HEADER);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(claims));
    let mut mac = mac(key);
    mac.update(token.as_bytes());
    let signature = mac.finalize().into_bytes();
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    token
}

/// The claims of a token signed with `key` (HS256) whose `exp` is in the
/// future.
pub fn verify(token: &str, key: &[u8], now: u64) -> Result<Map<String, Value>, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Value = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(JwtError::Malformed)?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(JwtError::Algorithm);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| JwtError::Malformed)?;
    let signed_len = token.len() - signature_len(token);
    let mut mac = mac(key);
    mac.update(&token.as_bytes()[..signed_len]);
    mac.verify_slice(&signature)
        .map_err(|_| JwtError::Signature)?;
    let claims: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(claims)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(JwtError::Malformed)?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .ok_or(JwtError::NoExpiry)?;
    if exp <= now as f64 {
        return Err(JwtError::Expired);
    }
    Ok(claims)
}

/// Bytes of `.signature` at the end of the token.
fn signature_len(token: &str) -> usize {
    token.rfind('.').map_or(0, |dot| token.len() - dot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Map<String, Value> {
        let mut claims = Map::new();
        claims.insert("iss".into(), "me".into());
        claims.insert("exp".into(), exp.into());
        claims
    }

    #[test]
    fn signed_tokens_verify_and_tampering_does_not() {
        let token = sign(&claims(2000), b"key");
        assert_eq!(verify(&token, b"key", 1000).unwrap()["iss"], "me");
        assert_eq!(verify(&token, b"other", 1000), Err(JwtError::Signature));
        assert_eq!(verify(&token, b"key", 2000), Err(JwtError::Expired));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(r#"{"iss":"me","exp":99999}"#);
        parts[1] = &forged;
        assert_eq!(
            verify(&parts.join("."), b"key", 1000),
            Err(JwtError::Signature)
        );
        assert_eq!(verify("a.b", b"key", 0), Err(JwtError::Malformed));
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            parts[1]
        );
        assert_eq!(verify(&none, b"key", 0), Err(JwtError::Algorithm));
        let mut no_exp = Map::new();
        no_exp.insert("iss".into(), "me".into());
        assert_eq!(
            verify(&sign(&no_exp, b"key"), b"key", 0),
            Err(JwtError::NoExpiry)
        );
    }

    #[test]
    fn matches_a_known_token() {
        // RFC 7515 appendix A.1's HS256 key and its JWT, with its line breaks
        // removed; its exp is 1300819380.
        let key = URL_SAFE_NO_PAD
            .decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
            .unwrap();
        let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let claims = verify(token, &key, 1300819379).unwrap();
        assert_eq!(claims["iss"], "joe");
    }
}
