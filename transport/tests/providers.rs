//! The provider constructors a library user needs without the command
//! line: Microsoft certificate credentials, Google service accounts, and
//! presets pointed at another endpoint.
#![allow(clippy::unwrap_used)]

use postern_transport::OAuth2;
use postern_transport::oauth::jwt::decode_claims_unverified;
use postern_transport::oauth::{ClientAuth, Endpoint, Grant};

const KEY: &str = include_str!("../../oauth-proto/tests/data/test-only-rsa-key.pem");

#[test]
fn microsoft_certificate_credential_signs_per_request() {
    let o = OAuth2::microsoft_app_certificate(
        "contoso.onmicrosoft.com",
        "00000000-0000-0000-0000-000000000001",
        KEY,
        "8B:1F:00:3A:5C:77:10:9E:42:AA:0B:CD:EF:12:34:56:78:90:AB:CD",
        "reports@contoso.com",
    )
    .unwrap();
    let r = o.token_request(None, 1_800_000_000).unwrap();
    assert_eq!(
        r.endpoint.as_str(),
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
    let ClientAuth::PrivateKeyJwt(assertion) = &r.client_auth else {
        panic!("{:?}", r.client_auth)
    };
    let claims = decode_claims_unverified(assertion.expose()).unwrap();
    assert_eq!(claims["aud"], r.endpoint.as_str());
    assert_eq!(claims["iss"], "00000000-0000-0000-0000-000000000001");
    assert_eq!(claims["exp"], 1_800_000_600u64);
    let again = o.token_request(None, 1_800_000_000).unwrap();
    let ClientAuth::PrivateKeyJwt(second) = &again.client_auth else {
        panic!()
    };
    assert_ne!(
        assertion.expose(),
        second.expose(),
        "a fresh jti per request"
    );
    assert!(
        OAuth2::microsoft_app_certificate("t", "c", KEY, "not hex", "m").is_err(),
        "a bad thumbprint is a configuration error"
    );
}

#[test]
fn google_service_account_acts_for_the_mailbox() {
    let key = serde_json::json!({
        "type": "service_account",
        "client_email": "mailer@project.iam.gserviceaccount.com",
        "private_key_id": "abc123",
        "private_key": KEY,
        "token_uri": "https://oauth2.googleapis.com/token",
    })
    .to_string();
    let o = OAuth2::google_service_account(&key, "user@example.com").unwrap();
    let r = o.token_request(None, 1_800_000_000).unwrap();
    let Grant::JwtBearer { assertion } = &r.grant else {
        panic!("{:?}", r.grant)
    };
    let claims = decode_claims_unverified(assertion.expose()).unwrap();
    assert_eq!(claims["iss"], "mailer@project.iam.gserviceaccount.com");
    assert_eq!(claims["sub"], "user@example.com");
    assert_eq!(claims["scope"], "https://mail.google.com/");
    assert_eq!(claims["aud"], "https://oauth2.googleapis.com/token");
    assert!(!format!("{o:?}").contains("PRIVATE KEY"), "no key in Debug");
    assert!(OAuth2::google_service_account("{}", "u@example.com").is_err());
}

/// The assertion's audience follows the endpoint: a certificate or
/// service-account preset pointed elsewhere signs for the new token URL
/// (an assertion for the old one would be refused there).
#[test]
fn signed_presets_follow_another_endpoint() {
    let other = "https://login.example.net/contoso/token";
    let o = OAuth2::microsoft_app_certificate("contoso", "app", KEY, "8b1f", "m@contoso.com")
        .unwrap()
        .with_endpoint(Endpoint::parse(other).unwrap());
    let r = o.token_request(None, 1_800_000_000).unwrap();
    let ClientAuth::PrivateKeyJwt(assertion) = &r.client_auth else {
        panic!("{:?}", r.client_auth)
    };
    assert_eq!(
        decode_claims_unverified(assertion.expose()).unwrap()["aud"],
        other
    );

    let key = serde_json::json!({
        "client_email": "mailer@project.iam.gserviceaccount.com",
        "private_key": KEY,
    })
    .to_string();
    let o = OAuth2::google_service_account(&key, "user@example.com")
        .unwrap()
        .with_endpoint(Endpoint::parse(other).unwrap());
    let r = o.token_request(None, 1_800_000_000).unwrap();
    let Grant::JwtBearer { assertion } = &r.grant else {
        panic!("{:?}", r.grant)
    };
    assert_eq!(
        decode_claims_unverified(assertion.expose()).unwrap()["aud"],
        other
    );
}

#[test]
fn presets_take_another_endpoint() {
    let o = OAuth2::microsoft_app(
        "contoso",
        "app",
        postern_transport::Secret::new("s"),
        "m@contoso.com",
    )
    .unwrap()
    .with_endpoint(Endpoint::parse("https://login.example.net/contoso/token").unwrap());
    assert_eq!(
        o.token_request(None, 0).unwrap().endpoint.as_str(),
        "https://login.example.net/contoso/token"
    );
}
