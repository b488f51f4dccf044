//! The conformance runner over the bundled token-endpoint vectors (real
//! responses from Microsoft, Google, RFCs and broken servers), and the request
//! vectors: every grant and client authentication checked against them.

#[path = "../examples/oauth_conformance.rs"]
mod conformance;

use postern_oauth::request::basic_authorization;
use postern_oauth::{
    ClientAuth, Endpoint, Grant, Pkce, ResponseParser, Secret, TokenRequest, form,
};
use serde_json::Value;

const OAUTH: &str = include_str!("../../vectors/oauth.json");

fn doc() -> Value {
    serde_json::from_str(OAUTH).expect("vectors are JSON")
}

#[test]
fn token_responses_give_what_a_correct_client_concludes() {
    let doc = doc();
    let cases = doc["token_endpoint_responses"].as_array().expect("array");
    assert!(cases.len() >= 25);
    let results = conformance::token_responses(OAUTH).expect("runner accepts the file");
    let results = results.as_array().expect("array");
    assert_eq!(results.len(), cases.len());
    for (case, got) in cases.iter().zip(results) {
        let id = &case["id"];
        let expect = &case["expect"];
        let outcome = expect["outcome"].as_str().expect("outcome");
        let allowed: Vec<&str> = match outcome {
            "token_or_protocol_error" => vec!["token", "protocol_error"],
            "oauth_error_or_protocol_error" => vec!["oauth_error", "protocol_error"],
            o => vec![o],
        };
        // A tolerant client takes the first of the allowed outcomes.
        assert_eq!(got["outcome"], allowed[0], "{id}: {got}");
        for key in [
            "error",
            "ms_error_codes",
            "retryable",
            "retry_after_secs",
            "expires_in_secs",
            "refresh_token",
            "token_type",
            "diagnose",
        ] {
            if let Some(want) = expect.get(key) {
                assert_eq!(&got[key], want, "{id}: {key}");
            }
        }
    }
}

#[test]
fn token_responses_split_anywhere_parse_the_same() {
    for case in doc()["token_endpoint_responses"].as_array().expect("array") {
        let raw = case["response"]["raw_http"]
            .as_str()
            .expect("raw")
            .as_bytes();
        let whole = conformance::result(raw);
        for cut in (0..raw.len()).step_by(7).chain([1, raw.len() - 1]) {
            let mut p = ResponseParser::default();
            let first = p.push(&raw[..cut]).expect("prefix");
            let resp = match first {
                Some(r) => r,
                None => match p.push(&raw[cut..]).expect("rest") {
                    Some(r) => r,
                    None => p.finish().expect("close-delimited"),
                },
            };
            let again = conformance::result(&reparse(&resp));
            assert_eq!(again, whole, "{} cut at {cut}", case["id"]);
        }
    }
}

/// Serialises a parsed response back with a Content-Length, for comparison.
fn reparse(r: &postern_oauth::HttpResponse) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", r.status, r.reason).into_bytes();
    for (n, v) in &r.headers {
        if n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding") {
            continue;
        }
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", r.body.len()).as_bytes());
    out.extend_from_slice(&r.body);
    out
}

fn vector(id: &str) -> Value {
    doc()["request_vectors"]
        .as_array()
        .expect("array")
        .iter()
        .find(|v| v["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no vector {id}"))
}

/// The form pairs of the body of `http`, sorted.
fn body_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    let text = std::str::from_utf8(bytes).expect("ascii");
    let (_, body) = text.split_once("\r\n\r\n").expect("head and body");
    let mut pairs = form::parse(body);
    pairs.sort();
    pairs
}

fn sorted(body: &str) -> Vec<(String, String)> {
    let mut pairs = form::parse(body);
    pairs.sort();
    pairs
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_else(|| panic!("{k}")).to_owned()
}

#[test]
fn basic_authorization_follows_rfc6749_2_3_1() {
    let v = vector("rfc6749-2.3.1-basic-encoding");
    let got = basic_authorization(&s(&v, "client_id"), &Secret::new(s(&v, "client_secret")));
    assert_eq!(got.expose(), s(&v, "authorization_header"));
    let v = vector("entra-secret-tilde-basic-risk");
    let got = basic_authorization(&s(&v, "client_id"), &Secret::new(s(&v, "client_secret")));
    assert_eq!(got.expose(), s(&v, "basic_rfc_encoded"));
    assert_ne!(got.expose(), s(&v, "basic_raw"));
}

#[test]
fn pkce_follows_rfc7636_appendix_b() {
    let v = vector("rfc7636-appendix-b-pkce");
    let p = Pkce::from_verifier(Secret::new(s(&v, "code_verifier")));
    assert_eq!(p.challenge, s(&v, "code_challenge_S256"));
}

#[test]
fn grants_produce_the_documented_requests() {
    let ep = |v: &Value| Endpoint::parse(&s(v, "url")).expect("url");
    let check = |v: &Value, req: TokenRequest| {
        let http = req.to_http();
        let text = String::from_utf8(http.bytes.clone()).expect("ascii");
        let url = s(v, "url");
        let path = url.splitn(4, '/').nth(3).expect("path");
        assert!(
            text.starts_with(&format!("POST /{path} HTTP/1.1\r\n")),
            "{text}"
        );
        assert!(text.contains(&format!("\r\nContent-Type: {}\r\n", s(v, "content_type"))));
        assert!(text.contains("\r\nAccept: application/json\r\n"));
        let body = text.split_once("\r\n\r\n").expect("body").1;
        assert!(text.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
        body_pairs(&http.bytes)
    };
    let cid = "00000000-1111-2222-3333-444444444444";

    let v = vector("ms-cc-secret");
    let req = TokenRequest::new(
        ep(&v),
        cid,
        ClientAuth::SecretPost(Secret::new("ApZ8Q~2mlBG7.abc_DEF-123")),
        Grant::ClientCredentials,
    )
    .scope("https://outlook.office365.com/.default");
    assert_eq!(check(&v, req.clone()), sorted(&s(&v, "body")));
    // The tilde is percent-encoded on the wire, as the vector has it.
    assert!(
        String::from_utf8(req.to_http().bytes)
            .unwrap()
            .contains("client_secret=ApZ8Q%7E2mlBG7.abc_DEF-123")
    );

    let v = vector("ms-cc-certificate");
    let req = TokenRequest::new(
        ep(&v),
        cid,
        ClientAuth::PrivateKeyJwt(Secret::new("header.claims.sig")),
        Grant::ClientCredentials,
    )
    .scope("https://outlook.office365.com/.default");
    let without_assertion = |p: Vec<(String, String)>| -> Vec<(String, String)> {
        p.into_iter()
            .filter(|(k, _)| k != "client_assertion")
            .collect()
    };
    assert_eq!(
        without_assertion(check(&v, req)),
        without_assertion(sorted(&s(&v, "body")))
    );

    let v = vector("ms-refresh-delegated");
    let req = TokenRequest::new(
        ep(&v),
        cid,
        ClientAuth::None,
        Grant::RefreshToken {
            refresh_token: Secret::new("0.AXoA2Pi...rotated-1"),
        },
    )
    .scope("https://outlook.office.com/SMTP.Send offline_access");
    assert_eq!(check(&v, req), sorted(&s(&v, "body")));

    let v = vector("google-refresh");
    let req = TokenRequest::new(
        ep(&v),
        "1234567890-abc.apps.googleusercontent.com",
        ClientAuth::SecretPost(Secret::new("GOCSPX-xxxxxxxx")),
        Grant::RefreshToken {
            refresh_token: Secret::new("1//0gXXXXXXXX"),
        },
    );
    assert_eq!(check(&v, req), sorted(&s(&v, "body")));

    let v = vector("ms-device-poll");
    let req = TokenRequest::new(
        ep(&v),
        cid,
        ClientAuth::None,
        Grant::DeviceCode {
            device_code: Secret::new("DEVICE_CODE"),
        },
    );
    assert_eq!(check(&v, req), sorted(&s(&v, "body")));

    let v = vector("google-sa-jwt-bearer");
    let want = sorted(&s(&v, "body"));
    let assertion = want
        .iter()
        .find(|(k, _)| k == "assertion")
        .expect("assertion")
        .1
        .clone();
    let mut req = TokenRequest::new(
        ep(&v),
        "unused",
        ClientAuth::None,
        Grant::JwtBearer {
            assertion: Secret::new(assertion),
        },
    );
    req.client_id = None;
    assert_eq!(check(&v, req), want);
}

#[test]
fn client_secret_basic_moves_credentials_to_the_header() {
    let req = TokenRequest::new(
        Endpoint::parse("https://as.example/token").expect("url"),
        "1PpG/Q 1",
        ClientAuth::SecretBasic(Secret::new(
            "z/tZ9VwFZqApmIQ+ZH1I5pLk/uB4ud:X2/8bL+wfFTt1rFw=",
        )),
        Grant::ClientCredentials,
    );
    let text = String::from_utf8(req.to_http().bytes).expect("ascii");
    let v = vector("rfc6749-2.3.1-basic-encoding");
    assert!(text.contains(&format!(
        "\r\nAuthorization: {}\r\n",
        s(&v, "authorization_header")
    )));
    assert!(
        text.ends_with("\r\n\r\ngrant_type=client_credentials"),
        "{text}"
    );
}
