//! No secret appears in `Debug`, `Display` or an error: every public type that
//! holds one is formatted and searched for the secret's value.

use std::time::{Duration, Instant};

use postern_oauth::{
    AuthorizationRequest, CacheConfig, CacheEvent, ClientAuth, Endpoint, FetchError, Grant, Pkce,
    ResponseParser, Secret, TokenCache, TokenRequest, TokenResponse, classify, parse_redirect,
};

const SECRET: &str = "SUPERSECRETVALUE123";

fn assert_clean(what: &str, text: String) {
    assert!(!text.contains(SECRET), "{what} leaks the secret: {text}");
}

#[test]
fn no_public_type_prints_a_secret() {
    let secret = Secret::new(SECRET);
    assert_clean("Secret", format!("{secret:?} {secret}"));
    let ep = Endpoint::parse("https://as.example/token").unwrap();
    for auth in [
        ClientAuth::SecretPost(secret.clone()),
        ClientAuth::SecretBasic(secret.clone()),
        ClientAuth::PrivateKeyJwt(secret.clone()),
    ] {
        for grant in [
            Grant::ClientCredentials,
            Grant::RefreshToken {
                refresh_token: secret.clone(),
            },
            Grant::AuthorizationCode {
                code: secret.clone(),
                redirect_uri: "http://127.0.0.1/cb".into(),
                code_verifier: Some(secret.clone()),
            },
            Grant::DeviceCode {
                device_code: secret.clone(),
            },
            Grant::JwtBearer {
                assertion: secret.clone(),
            },
        ] {
            let req = TokenRequest::new(ep.clone(), "cid", auth.clone(), grant.clone());
            let http = req.to_http();
            assert_clean(
                "TokenRequest",
                format!("{req:?} {http:?} {auth:?} {grant:?}"),
            );
            // ... while the wire carries it.
            let wire = String::from_utf8(http.bytes).unwrap();
            assert!(wire.contains(SECRET) || wire.contains("Basic "), "{wire}");
        }
    }
    let body = format!(
        "{{\"access_token\":\"{SECRET}\",\"refresh_token\":\"{SECRET}\",\"id_token\":\"{SECRET}\",\"token_type\":\"Bearer\",\"expires_in\":\"3600\"}}"
    );
    let raw = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let resp = ResponseParser::default()
        .push(raw.as_bytes())
        .unwrap()
        .unwrap();
    assert_clean("HttpResponse", format!("{resp:?}"));
    let outcome = classify(&resp, None);
    assert_clean("Outcome", format!("{outcome:?}"));
    let token = match outcome {
        postern_oauth::Outcome::Token(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(token.expires_in, Some(Duration::from_secs(3600)));
    assert_clean("TokenResponse", format!("{token:?}"));
    // A token in a non-JSON body is cut out of the protocol error's snippet.
    let raw = format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>{SECRET}</html>");
    let mut p = ResponseParser::default();
    assert!(p.push(raw.as_bytes()).unwrap().is_none());
    let resp = p.finish().unwrap();
    let outcome = classify(&resp, None);
    assert_clean("ProtocolError", format!("{outcome:?}"));
    if let postern_oauth::Outcome::ProtocolError(e) = &outcome {
        assert_clean("ProtocolError Display", e.to_string());
        assert_eq!(
            e.diagnosis.as_ref().map(|d| d.id),
            Some("config.token_url_wrong")
        );
    } else {
        panic!("{outcome:?}");
    }

    let mut cache = TokenCache::new(CacheConfig::default(), Some(secret.clone()));
    let now = Instant::now();
    let f = cache.lookup(now).fetch.unwrap();
    let mut t: TokenResponse = token.clone();
    t.refresh_token = Some(Secret::new(format!("{SECRET}-2")));
    cache.handle_token(now, f, t);
    let event: Option<CacheEvent> = cache.poll_event();
    let lookup = cache.lookup(now);
    assert_clean("TokenCache", format!("{cache:?} {event:?} {lookup:?}"));
    assert_clean(
        "FetchError",
        format!("{}", FetchError::Transport("refused".into())),
    );

    let pkce = Pkce::from_verifier(secret.clone());
    assert_clean("Pkce", format!("{pkce:?}"));
    let code = parse_redirect(&format!("?code={SECRET}&state=s"), "s").unwrap();
    assert_clean("code", format!("{code:?}"));
    let body = format!(
        r#"{{"device_code":"{SECRET}","user_code":"ABCD","verification_uri":"https://microsoft.com/devicelogin","expires_in":900,"interval":5}}"#
    );
    let raw = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let resp = ResponseParser::default()
        .push(raw.as_bytes())
        .unwrap()
        .unwrap();
    let dev = postern_oauth::classify_device_authorization(&resp).unwrap();
    assert_clean("DeviceAuthorization", format!("{dev:?}"));
    let mut auth = AuthorizationRequest::new(
        "https://as.example/authorize",
        "cid",
        "http://127.0.0.1/cb",
        "s",
        "st",
    );
    auth.code_challenge = Some(pkce.challenge.clone());
    assert_clean("authorization URL", auth.url());
}

#[cfg(feature = "rsa-signer")]
#[test]
fn rsa_signer_signs_verifiable_rs256_assertions() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use postern_oauth::jwt::{self, KeyId, RsaSigner};
    use rsa::pkcs8::DecodePublicKey;
    use rsa::signature::Verifier;

    let signer = RsaSigner::from_pkcs8_pem(include_str!("data/test-only-rsa-key.pem")).unwrap();
    assert_eq!(format!("{signer:?}"), "RsaSigner([redacted])");
    let claims = jwt::client_assertion_claims(
        "cid",
        "https://login.example/token",
        "jti-1",
        1_700_000_000,
        300,
    );
    let assertion = jwt::sign(&KeyId::X5t("thumb".into()), &claims, &signer).unwrap();
    let (input, sig) = assertion.expose().rsplit_once('.').unwrap();
    let public =
        rsa::PublicKey::from_public_key_pem(include_str!("data/test-only-rsa-pub.pem")).unwrap();
    let verifier = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(public);
    let sig = rsa::pkcs1v15::Signature::try_from(URL_SAFE_NO_PAD.decode(sig).unwrap().as_slice())
        .unwrap();
    verifier
        .verify(input.as_bytes(), &sig)
        .expect("valid RS256 signature");
    assert!(RsaSigner::from_pkcs8_pem("not a key").is_err());
}

/// Found by the `token_response` fuzz target: a short token in a body that
/// is not valid JSON was shown in the snippet of the protocol error.
#[test]
fn snippet_redacts_secret_fields_whatever_their_length() {
    use postern_oauth::response::snippet;
    for body in [
        &br#"{"access_token":"SECRETVALUE-7","#[..],
        br#"{"access_token" : "short", "refresh_token":"r1"}"#,
        br#"{"id_token":"abc\"def"#,
        b"access_token=tok1&token_type=bearer&refresh_token=r2",
        b"<html>code=c0de&state=x</html>",
    ] {
        let s = snippet(body);
        for secret in [
            "SECRETVALUE",
            "short",
            "r1",
            "abc",
            "def",
            "tok1",
            "r2",
            "c0de",
        ] {
            assert!(!s.contains(secret), "{secret} in {s:?}");
        }
        assert!(s.contains("[redacted]"), "{s}");
    }
    // Non-secret fields stay readable.
    let s = snippet(br#"{"error":"invalid_client","token_type":"Bearer"}"#);
    assert!(s.contains("invalid_client") && s.contains("Bearer"), "{s}");
}

/// Found by the `redirect` fuzz target: an `error_description` from a crafted
/// redirect reached the terminal with its control characters and unbounded.
#[test]
fn redirect_errors_are_printable_and_bounded() {
    use postern_oauth::parse_redirect;
    let evil = format!(
        "/cb?error=access_denied&error_description=\u{1b}]0;pwned\u{7}{}&state=s",
        "\u{14}".repeat(1000)
    );
    let err = parse_redirect(&evil, "s").unwrap_err().to_string();
    assert!(!err.chars().any(char::is_control), "{err:?}");
    assert!(err.chars().count() < 400, "{}", err.len());
    assert!(
        err.starts_with("authorization refused: access_denied"),
        "{err}"
    );
}
