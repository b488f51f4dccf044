//! SASL PLAIN (RFC 4616) and LOGIN as a server reads them: pure decoding.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::sasl::Secret;

/// The LOGIN prompts, base64 of `Username:` and `Password:`.
pub(crate) const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
pub(crate) const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// Credentials read from a client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Presented {
    pub authzid: Option<String>,
    pub username: String,
    pub password: Secret,
}

/// Why a SASL response was refused (`501 5.5.2`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SaslDecodeError {
    Base64,
    Utf8,
    /// PLAIN without two NULs, or with an empty user name.
    Shape,
}

/// One base64 response line to bytes. `=` is the empty response (RFC 4954).
pub(crate) fn decode_response(line: &str) -> Result<Vec<u8>, SaslDecodeError> {
    if line == "=" {
        return Ok(Vec::new());
    }
    STANDARD
        .decode(line.trim())
        .map_err(|_| SaslDecodeError::Base64)
}

/// `authzid NUL authcid NUL passwd`.
pub(crate) fn plain(line: &str) -> Result<Presented, SaslDecodeError> {
    let bytes = decode_response(line)?;
    let text = String::from_utf8(bytes).map_err(|_| SaslDecodeError::Utf8)?;
    let mut parts = text.splitn(3, '\0');
    let (Some(authzid), Some(username), Some(password)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslDecodeError::Shape);
    };
    if username.is_empty() || password.contains('\0') {
        return Err(SaslDecodeError::Shape);
    }
    Ok(Presented {
        authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
        username: username.to_owned(),
        password: Secret::new(password),
    })
}

/// One LOGIN answer (user name or password) as text.
pub(crate) fn login_field(line: &str) -> Result<String, SaslDecodeError> {
    String::from_utf8(decode_response(line)?).map_err(|_| SaslDecodeError::Utf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_forms() {
        let p = plain(&STANDARD.encode("\0user@example.com\0pa ss")).expect("valid");
        assert_eq!(p.username, "user@example.com");
        assert_eq!(p.password.expose(), "pa ss");
        assert_eq!(p.authzid, None);
        let p = plain(&STANDARD.encode("admin\0user\0pw")).expect("valid");
        assert_eq!(p.authzid.as_deref(), Some("admin"));
        assert_eq!(
            plain(&STANDARD.encode("user\0pw")),
            Err(SaslDecodeError::Shape)
        );
        assert_eq!(
            plain(&STANDARD.encode("\0\0pw")),
            Err(SaslDecodeError::Shape)
        );
        assert_eq!(plain("not base64!"), Err(SaslDecodeError::Base64));
        assert_eq!(
            plain(&STANDARD.encode(b"\0u\0\xff")),
            Err(SaslDecodeError::Utf8)
        );
        assert_eq!(plain("="), Err(SaslDecodeError::Shape));
    }

    #[test]
    fn login_fields() {
        assert_eq!(login_field("dXNlcg=="), Ok("user".into()));
        assert_eq!(login_field("="), Ok(String::new()));
        assert!(login_field("%%").is_err());
    }
}
