//! PKCE (RFC 7636) with the S256 method. The verifier comes from random bytes
//! the caller supplies: the crate has no RNG.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use postern_common::Secret;

/// A PKCE verifier and its S256 challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pkce {
    /// The verifier, sent with the code exchange.
    pub verifier: Secret,
    /// `BASE64URL(SHA256(verifier))`, sent in the authorization URL.
    pub challenge: String,
}

impl Pkce {
    /// A verifier made from 32 random bytes (43 characters, the RFC's
    /// recommendation), and its challenge. Use a cryptographic RNG.
    #[must_use]
    pub fn from_random(random: [u8; 32]) -> Pkce {
        Self::from_verifier(Secret::new(URL_SAFE_NO_PAD.encode(random)))
    }

    /// The challenge for an existing verifier.
    #[must_use]
    pub fn from_verifier(verifier: Secret) -> Pkce {
        let challenge = challenge_s256(verifier.expose());
        Pkce {
            verifier,
            challenge,
        }
    }
}

/// `BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))`.
#[must_use]
pub fn challenge_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A random-looking value for `state` or a JWT `jti`, from caller-supplied bytes.
#[must_use]
pub fn random_token(random: [u8; 16]) -> String {
    URL_SAFE_NO_PAD.encode(random)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b() {
        let random = [
            116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186, 22, 212,
            37, 77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121,
        ];
        let p = Pkce::from_random(random);
        assert_eq!(
            p.verifier.expose(),
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        );
        assert_eq!(p.challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }
}
