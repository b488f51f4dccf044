//! JWTs the client builds (private_key_jwt client assertions, RFC 7523 JWT
//! bearer grants such as Google service accounts) and the unverified payload
//! decoding used for pre-flight checks of access tokens.
//!
//! Signing is the caller's: a [`Signer`] turns the signing input into a
//! signature, so the core needs no crypto library. With the `rsa-signer`
//! feature, [`RsaSigner`] signs RS256 with a PKCS#8 PEM key.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use postern_common::Secret;

/// Signs JWTs.
pub trait Signer {
    /// The JWS `alg` (for example `RS256`).
    fn algorithm(&self) -> &str;
    /// Signs `input` (the ASCII `header.payload`) and returns the raw signature.
    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// A signer failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignError(pub String);

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "signing the assertion failed: {}", self.0)
    }
}

impl std::error::Error for SignError {}

/// How the key is named in the JWT header.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyId {
    /// No key identifier.
    None,
    /// `kid` (Google: the service account's `private_key_id`).
    Kid(String),
    /// `x5t`: base64url SHA-1 thumbprint of the certificate (Microsoft).
    X5t(String),
    /// `x5t#S256`: base64url SHA-256 thumbprint of the certificate.
    X5tS256(String),
}

/// Builds and signs a JWT: `base64url(header).base64url(claims).base64url(sig)`.
pub fn sign(
    key_id: &KeyId,
    claims: &Map<String, Value>,
    signer: &dyn Signer,
) -> Result<Secret, SignError> {
    let mut header = Map::new();
    header.insert("alg".into(), json!(signer.algorithm()));
    header.insert("typ".into(), json!("JWT"));
    match key_id {
        KeyId::None => {}
        KeyId::Kid(k) => {
            header.insert("kid".into(), json!(k));
        }
        KeyId::X5t(t) => {
            header.insert("x5t".into(), json!(t));
        }
        KeyId::X5tS256(t) => {
            header.insert("x5t#S256".into(), json!(t));
        }
    }
    let mut input = URL_SAFE_NO_PAD.encode(Value::Object(header).to_string());
    input.push('.');
    input.push_str(&URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string()));
    let sig = signer.sign(input.as_bytes())?;
    input.push('.');
    input.push_str(&URL_SAFE_NO_PAD.encode(sig));
    Ok(Secret::new(input))
}

/// The claims of a private_key_jwt client assertion (RFC 7523 §3, Microsoft
/// certificate credentials): `aud` = the token URL, `iss` = `sub` = client id,
/// `jti`, `iat`, `nbf`, `exp`. Times are Unix seconds supplied by the caller.
#[must_use]
pub fn client_assertion_claims(
    client_id: &str,
    token_url: &str,
    jti: &str,
    now_unix: u64,
    lifetime_secs: u64,
) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("aud".into(), json!(token_url));
    c.insert("iss".into(), json!(client_id));
    c.insert("sub".into(), json!(client_id));
    c.insert("jti".into(), json!(jti));
    c.insert("iat".into(), json!(now_unix));
    c.insert("nbf".into(), json!(now_unix));
    c.insert("exp".into(), json!(now_unix + lifetime_secs));
    c
}

/// The claims of an RFC 7523 JWT bearer grant as Google service accounts use
/// it: `iss` = the service account, `scope`, `aud` = the token URL, `iat`,
/// `exp` (at most an hour later), and `sub` = the user to act for
/// (domain-wide delegation), when given.
#[must_use]
pub fn bearer_grant_claims(
    issuer: &str,
    scope: &str,
    token_url: &str,
    subject: Option<&str>,
    now_unix: u64,
    lifetime_secs: u64,
) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("iss".into(), json!(issuer));
    c.insert("scope".into(), json!(scope));
    c.insert("aud".into(), json!(token_url));
    c.insert("iat".into(), json!(now_unix));
    c.insert("exp".into(), json!(now_unix + lifetime_secs.min(3600)));
    if let Some(sub) = subject {
        c.insert("sub".into(), json!(sub));
    }
    c
}

/// Decodes the payload of a JWT **without verifying it** (for pre-flight
/// checks such as `aud` and `roles`; the server verifies). `None` when the
/// token is not a JWT (opaque tokens are common).
#[must_use]
pub fn decode_claims_unverified(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// RS256 signing with an RSA key from a PKCS#8 PEM file
/// (`-----BEGIN PRIVATE KEY-----`, as Azure certificates and Google service
/// account keys are exported).
#[cfg(feature = "rsa-signer")]
pub struct RsaSigner {
    key: rsa::pkcs1v15::SigningKey<sha2::Sha256>,
}

#[cfg(feature = "rsa-signer")]
impl RsaSigner {
    /// Reads the key. The error names the problem, never the key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<RsaSigner, SignError> {
        use rsa::pkcs8::DecodePrivateKey;
        let key = rsa::PrivateKey::from_pkcs8_pem(pem)
            .map_err(|e| SignError(format!("not a PKCS#8 PEM RSA private key ({e})")))?;
        Ok(RsaSigner {
            key: rsa::pkcs1v15::SigningKey::new(key),
        })
    }
}

#[cfg(feature = "rsa-signer")]
impl fmt::Debug for RsaSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RsaSigner([redacted])")
    }
}

#[cfg(feature = "rsa-signer")]
impl Signer for RsaSigner {
    fn algorithm(&self) -> &str {
        "RS256"
    }

    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, SignError> {
        use rsa::signature::{SignatureEncoding, Signer as _};
        let sig = self
            .key
            .try_sign(input)
            .map_err(|e| SignError(e.to_string()))?;
        Ok(sig.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Signer for Fixed {
        fn algorithm(&self) -> &str {
            "RS256"
        }
        fn sign(&self, input: &[u8]) -> Result<Vec<u8>, SignError> {
            Ok(input.iter().rev().take(4).copied().collect())
        }
    }

    #[test]
    fn builds_and_decodes() {
        let claims = client_assertion_claims("cid", "https://t/token", "j1", 1_700_000_000, 600);
        let jwt = sign(&KeyId::X5t("thumb".into()), &claims, &Fixed).unwrap();
        let parts: Vec<&str> = jwt.expose().split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, json!({"alg":"RS256","typ":"JWT","x5t":"thumb"}));
        let got = decode_claims_unverified(jwt.expose()).unwrap();
        assert_eq!(got["exp"], json!(1_700_000_600u64));
        assert_eq!(got["iss"], got["sub"]);
        assert!(decode_claims_unverified("opaque-token").is_none());
        assert!(decode_claims_unverified("a.!!!.c").is_none());
        let g = bearer_grant_claims(
            "sa@p.iam.gserviceaccount.com",
            "https://mail.google.com/",
            "https://oauth2.googleapis.com/token",
            Some("u@d"),
            10,
            7200,
        );
        assert_eq!(g["exp"], json!(3610));
    }
}
