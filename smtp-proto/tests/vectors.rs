//! The conformance runner over the bundled reply vectors (collected from real
//! servers and RFCs): every expected code, enhanced code and line text, and
//! every input a strict parser must reject.

#[path = "../examples/smtp_conformance.rs"]
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
        let mut server = ServerIdentity::default();
        server.host = host;
        server.port = port;
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

/// The real AUTH dialogues of the vectors, replayed against the client: every
/// server reply as recorded, split at every position by the caller of
/// `drive`. Checks what the client sends back and how it classifies the end.
mod transcripts {
    use std::time::Instant;

    use postern_smtp::diagnose::{Context, diagnose};
    use postern_smtp::{
        AuthFailureKind, Client, ClientConfig, Credentials, Event, Mechanism, Security,
        ServerIdentity,
    };
    use serde_json::Value;

    fn transcript(id: &str) -> Vec<(String, String)> {
        let doc: Value = serde_json::from_str(super::OAUTH).expect("json");
        let t = doc["smtp_transcripts"]
            .as_array()
            .expect("array")
            .iter()
            .find(|t| t["id"] == id)
            .unwrap_or_else(|| panic!("no transcript {id}"))["transcript"]
            .clone();
        t.as_array()
            .expect("steps")
            .iter()
            .map(|s| {
                (
                    s[0].as_str().expect("side").to_owned(),
                    s[1].as_str().expect("text").to_owned(),
                )
            })
            .collect()
    }

    /// Runs AUTH against the server replies of a transcript (the EHLO reply is
    /// the transcript's when it has one) and returns what the client sent
    /// after EHLO and the AUTH event.
    fn drive(id: &str, mechanism: Mechanism, token: &str, cut: usize) -> (Vec<String>, Event) {
        let steps = transcript(id);
        let config = ClientConfig::default()
            .tls(Security::ImplicitTls)
            .server(ServerIdentity::new("server.example.com", 587));
        let now = Instant::now();
        let mut c = Client::new(config, now);
        let feed = |c: &mut Client, bytes: &[u8]| {
            let at = cut.min(bytes.len());
            c.handle_input(now, &bytes[..at]).expect("input");
            c.handle_input(now, &bytes[at..]).expect("input");
        };
        feed(&mut c, b"220 server ready\r\n");
        let ehlo = steps
            .iter()
            .find(|(side, text)| side == "S" && text.starts_with("250-"))
            .map_or_else(
                || "250-server\r\n250 AUTH XOAUTH2 OAUTHBEARER".to_owned(),
                |(_, t)| t.clone(),
            );
        let _ = c
            .poll_transmit()
            .map(<[u8]>::len)
            .map(|n| c.advance_transmit(n));
        feed(&mut c, format!("{ehlo}\r\n").as_bytes());
        while c.poll_event().is_some() {}
        let creds = Credentials::bearer("someuser@example.com", token);
        c.authenticate(now, &creds, Some(mechanism))
            .expect("auth starts");
        let mut sent = Vec::new();
        let take = |c: &mut Client, sent: &mut Vec<String>| {
            if let Some(b) = c.poll_transmit() {
                let n = b.len();
                let text = String::from_utf8_lossy(b);
                let text = text.strip_suffix("\r\n").expect("whole lines");
                sent.extend(text.split("\r\n").map(str::to_owned));
                c.advance_transmit(n);
            }
        };
        take(&mut c, &mut sent);
        let is_auth = |s: &str, t: &str| {
            s == "C" && (t.to_ascii_uppercase().starts_with("AUTH") || t.starts_with("[["))
        };
        for (side, text) in steps.iter().skip_while(|(s, t)| !is_auth(s, t)) {
            if side == "S" && !text.starts_with("250") {
                // Some recorded multi-line replies lost their `-` separators
                // when they were written down: every line but the last
                // continues the reply.
                let lines: Vec<&str> = text.split("\r\n").collect();
                let mut reply = String::new();
                for (i, line) in lines.iter().enumerate() {
                    let mut line = (*line).to_owned();
                    if i + 1 < lines.len() && line.as_bytes().get(3) == Some(&b' ') {
                        line.replace_range(3..4, "-");
                    }
                    reply.push_str(&line);
                    reply.push_str("\r\n");
                }
                feed(&mut c, reply.as_bytes());
                take(&mut c, &mut sent);
            }
        }
        let event = std::iter::from_fn(|| c.poll_event())
            .last()
            .expect("an AUTH event");
        (sent, event)
    }

    fn failure(e: Event) -> postern_smtp::AuthFailure {
        match e {
            Event::AuthFailed(f) => f,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gmail_error_challenge_then_535() {
        for cut in 0..40 {
            let (sent, event) = drive(
                "gmail-smtp-xoauth2-failure-ir",
                Mechanism::XOAuth2,
                "yyy",
                cut,
            );
            assert_eq!(
                sent,
                vec![
                    "AUTH XOAUTH2 dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5eXkBAQ==",
                    ""
                ]
            );
            let f = failure(event);
            assert_eq!(
                f.challenge_text().as_deref(),
                Some(
                    "{\"status\":\"400\",\"schemes\":\"Bearer\",\"scope\":\"https://mail.google.com/\"}"
                )
            );
            assert_eq!(f.reply.code(), 535);
            assert!(f.token_refresh_may_help());
            assert_eq!(
                diagnose(Context::Auth(Mechanism::XOAuth2), &f.reply).map(|d| d.id),
                Some("google.smtp.token_rejected")
            );
        }
    }

    #[test]
    fn exchange_535_5_7_3_without_json() {
        // A JWT-sized token: the AUTH line would pass 512 octets, so the client
        // uses the two-step form, as in the recording.
        let token = "eyJ0eXAiOiJKV1Qi".repeat(30);
        let (sent, event) = drive(
            "exchange-smtp-xoauth2-failure-two-step",
            Mechanism::XOAuth2,
            &token,
            5,
        );
        assert_eq!(sent[0], "AUTH XOAUTH2");
        assert_eq!(sent.len(), 2);
        let f = failure(event);
        assert_eq!(f.challenge, None);
        assert_eq!(f.kind, AuthFailureKind::TokenRejected);
        assert_eq!(
            diagnose(Context::Auth(Mechanism::XOAuth2), &f.reply).map(|d| d.id),
            Some("ms.smtp.mailbox_not_mapped")
        );
        let (_, event) = drive("exchange-21vianet-535", Mechanism::XOAuth2, "t", 3);
        let f = failure(event);
        assert_eq!(
            diagnose(Context::Auth(Mechanism::XOAuth2), &f.reply).map(|d| d.id),
            Some("ms.smtp.mailbox_not_mapped")
        );
    }

    #[test]
    fn exchange_success_two_step() {
        let token = "eyJ0eXAiOiJKV1Qi".repeat(30);
        let (_, event) = drive(
            "exchange-smtp-xoauth2-success-two-step",
            Mechanism::XOAuth2,
            &token,
            7,
        );
        assert!(
            matches!(
                event,
                Event::Authenticated {
                    mechanism: Mechanism::XOAuth2,
                    ..
                }
            ),
            "{event:?}"
        );
    }

    #[test]
    fn exchange_auth_disabled_is_configuration_not_token() {
        let (_, event) = drive("exchange-smtp-auth-disabled", Mechanism::XOAuth2, "t", 9);
        let f = failure(event);
        assert_eq!(f.kind, AuthFailureKind::Configuration);
        assert!(
            !f.token_refresh_may_help(),
            "never burn a refresh on 5.7.139"
        );
        assert_eq!(
            diagnose(Context::Auth(Mechanism::XOAuth2), &f.reply).map(|d| d.id),
            Some("ms.smtp.auth_disabled")
        );
    }

    #[test]
    fn oauthbearer_error_is_acknowledged_with_aq() {
        let token = "mF_9.B5f-4.1JqM".repeat(40);
        let (sent, event) = drive(
            "oauthbearer-failure-continuation",
            Mechanism::OAuthBearer,
            &token,
            11,
        );
        assert_eq!(sent[0], "AUTH OAUTHBEARER");
        assert_eq!(sent.last().map(String::as_str), Some("AQ=="));
        let f = failure(event);
        assert!(
            f.challenge_text()
                .is_some_and(|c| c.contains("invalid_token"))
        );
        assert_eq!(f.reply.code(), 535);
    }
}

/// The vectors that carry a context: the diagnosis and the verdict a
/// correct client draws from the reply there.
#[test]
fn reply_vectors_give_their_diagnosis_and_verdict() {
    use postern_smtp::diagnose::{Context, diagnose};
    use postern_smtp::{Mechanism, ReplyParser};
    let doc: Value = serde_json::from_str(REPLIES).expect("vectors are JSON");
    let mut checked = 0;
    for v in doc["vectors"].as_array().expect("vectors") {
        let Some(context) = v["context"].as_str() else {
            continue;
        };
        let context = match context {
            "auth-xoauth2" => Context::Auth(Mechanism::XOAuth2),
            "auth-login" => Context::Auth(Mechanism::Login),
            "mail" => Context::Mail,
            "rcpt" => Context::Rcpt,
            "data" => Context::Data,
            other => panic!("unknown context {other}"),
        };
        let raw = v["raw"].as_str().expect("raw");
        let reply = ReplyParser::default()
            .parse(raw.as_bytes())
            .expect("a valid reply")
            .1
            .expect("a whole reply");
        assert_eq!(
            diagnose(context, &reply).map(|d| d.id),
            v["expected_diagnosis"].as_str(),
            "{raw}"
        );
        assert_eq!(
            reply.is_transient(),
            v["expected_transient"]
                .as_bool()
                .expect("expected_transient"),
            "{raw}"
        );
        checked += 1;
    }
    assert!(checked >= 8, "{checked} vectors with a context");
}
