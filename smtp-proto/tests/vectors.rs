//! The conformance runner over the bundled reply vectors (collected from real
//! servers and RFCs): every expected code, enhanced code and line text, and
//! every input a strict parser must reject.

#[path = "../examples/conformance.rs"]
mod conformance;

use serde_json::Value;

const REPLIES: &str = include_str!("../../vectors/smtp-replies.json");

#[test]
fn reply_vectors_give_what_a_correct_client_concludes() {
    let doc: Value = serde_json::from_str(REPLIES).expect("vectors are JSON");
    let cases = doc["vectors"].as_array().expect("a vectors array");
    assert!(cases.len() >= 30, "{} vectors", cases.len());
    let results = conformance::replies(REPLIES).expect("runner accepts the file");
    let results = results.as_array().expect("an array");
    assert_eq!(results.len(), cases.len());
    for (case, got) in cases.iter().zip(results) {
        let source = &case["source"];
        if case["expect_error"].as_bool() == Some(true) {
            assert!(
                got["error"].is_string(),
                "{source}: expected an error, got {got}"
            );
            assert!(got["code"].is_null(), "{source}");
            continue;
        }
        assert!(got["error"].is_null(), "{source}: {got}");
        assert_eq!(got["code"], case["expected_code"], "{source}");
        assert_eq!(got["enhanced"], case["expected_enhanced"], "{source}");
        assert_eq!(got["lines"], case["expected_lines"], "{source}");
    }
}

#[test]
fn reply_vectors_split_anywhere_parse_the_same() {
    use postern_smtp::{ReplyLimits, ReplyParser};
    let doc: Value = serde_json::from_str(REPLIES).expect("vectors are JSON");
    for case in doc["vectors"].as_array().expect("array") {
        if case["expect_error"].as_bool() == Some(true) || case["raw_encoding"].is_string() {
            continue;
        }
        let raw = case["raw"].as_str().expect("raw").as_bytes();
        let whole = ReplyParser::new(ReplyLimits::default())
            .parse(raw)
            .expect("parses");
        for cut in 0..raw.len() {
            let mut p = ReplyParser::new(ReplyLimits::default());
            let (n, first) = p.parse(&raw[..cut]).expect("prefix parses");
            let reply = match first {
                Some(r) => Some(r),
                None => p.parse(&raw[n..]).expect("rest parses").1,
            };
            assert_eq!(reply, whole.1, "{} cut at {cut}", case["source"]);
        }
    }
}

#[test]
fn body_mode_prints_the_wire_bytes() {
    assert_eq!(
        conformance::body(b".hello\nworld").unwrap(),
        b"..hello\r\nworld\r\n.\r\n"
    );
    assert_eq!(conformance::body(b"").unwrap(), b".\r\n");
    assert_eq!(conformance::body(b"a\r\n").unwrap(), b"a\r\n.\r\n");
    let err = conformance::body(b"nul\0byte\r\n").unwrap_err();
    assert!(err.contains("NUL"), "{err}");
    let long = vec![b'x'; 1200];
    assert!(conformance::body(&long).unwrap_err().contains("998"));
}

const OAUTH: &str = include_str!("../../vectors/oauth.json");

/// Parses the vectors' `raw_escaped` form (`\x01` escapes).
fn unescape(s: &str) -> String {
    s.replace("\\x01", "\u{1}")
}

/// Pulls `user`, `token`, `host`, `port` out of a raw SASL message.
fn fields(raw: &str) -> (String, String, Option<String>, Option<u16>) {
    let mut user = String::new();
    let mut token = String::new();
    let (mut host, mut port) = (None, None);
    for part in raw.split('\u{1}') {
        if let Some(u) = part.strip_prefix("user=") {
            user = u.to_string();
        } else if let Some(u) = part.strip_prefix("n,a=") {
            user = u.trim_end_matches(',').to_string();
        } else if let Some(t) = part.strip_prefix("auth=Bearer ") {
            token = t.to_string();
        } else if let Some(h) = part.strip_prefix("host=") {
            host = Some(h.to_string());
        } else if let Some(p) = part.strip_prefix("port=") {
            port = p.parse().ok();
        }
    }
    (user, token, host, port)
}

#[test]
fn sasl_initial_responses_match_the_valid_vectors_and_never_the_wrong_ones() {
    use postern_smtp::{Credentials, Mechanism, ServerIdentity, sasl};
    let doc: Value = serde_json::from_str(OAUTH).expect("vectors are JSON");
    let cases = doc["sasl_initial_responses"].as_array().expect("array");
    let mut valid = 0;
    for case in cases {
        let id = case["id"].as_str().expect("id");
        let mechanism =
            Mechanism::from_name(case["mechanism"].as_str().expect("mechanism")).expect("known");
        let raw = unescape(case["raw_escaped"].as_str().expect("raw"));
        let (user, token, host, port) = fields(&raw);
        let server = ServerIdentity { host, port };
        let ours = sasl::initial_response(mechanism, &Credentials::bearer(user, token), &server)
            .expect(id);
        let theirs = case["base64"].as_str().expect("base64");
        if case["valid"].as_bool() == Some(true) {
            assert_eq!(ours.expose(), theirs, "{id}");
            valid += 1;
        } else {
            assert_ne!(
                ours.expose(),
                theirs,
                "{id}: postern must not produce the known-wrong form"
            );
        }
    }
    assert!(valid >= 5);
}

#[test]
fn sasl_error_challenges_decode_to_their_json() {
    use postern_smtp::sasl;
    let doc: Value = serde_json::from_str(OAUTH).expect("vectors are JSON");
    for case in doc["sasl_error_challenges"].as_array().expect("array") {
        let b64 = case["challenge_base64"].as_str().expect("challenge");
        let decoded = sasl::decode_challenge(b64.as_bytes()).expect("base64");
        assert_eq!(
            String::from_utf8(decoded).expect("utf-8"),
            case["decoded"].as_str().expect("decoded"),
            "{}",
            case["id"]
        );
    }
}
