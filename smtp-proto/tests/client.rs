//! The client machine driven by scripted servers on virtual time. Every script
//! runs whole, split at every position and one byte at a time.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod support;

use std::time::Duration;

use postern_smtp::{
    AuthFailureKind, BodyType, Client, ClientConfig, CommandError, Credentials, DsnReturn,
    Envelope, Error, Event, LongLines, Mailbox, Mechanism, Notify, Phase, ReplyError, Security,
    ServerIdentity, XText,
};
use support::{Entry, Step::*, errors, events, last_event, run_all};

fn plain() -> ClientConfig {
    ClientConfig::default().tls(Security::Plaintext)
}

fn mb(s: &str) -> Mailbox {
    Mailbox::parse(s).unwrap()
}

fn env(to: &[&str]) -> Envelope {
    Envelope::new(mb("sender@example.com"), to.iter().map(|t| mb(t)))
}

const GREETING: &[u8] = b"220 mx.example.com ESMTP\r\n";
const EHLO: &[u8] = b"EHLO [127.0.0.1]\r\n";
const CAPS_PIPE: &[u8] = b"250-mx.example.com\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 1000\r\n250 ENHANCEDSTATUSCODES\r\n";
const CAPS_PLAIN: &[u8] = b"250-mx.example.com\r\n250 8BITMIME\r\n";

fn send_one(to: &'static [&'static str]) -> impl Fn(&mut Client, std::time::Instant) {
    move |c, now| {
        c.send_envelope(now, &env(to)).unwrap();
    }
}

fn body(data: &'static [u8]) -> impl Fn(&mut Client, std::time::Instant) {
    move |c, now| {
        let mut rest = data;
        while !rest.is_empty() {
            let n = c.write_body(now, rest).unwrap();
            assert!(n > 0);
            rest = &rest[n..];
        }
        c.finish_body(now).unwrap();
    }
}

fn quit(c: &mut Client, now: std::time::Instant) {
    c.quit(now).unwrap();
}

#[test]
fn pipelined_send_with_dot_stuffing_and_quit() {
    let log = run_all(
        &plain(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS_PIPE),
            Act(&send_one(&["a@example.org", "b@example.org"])),
            C(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"),
            S(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n"),
            Act(&body(b".leading dot\nbare lf\r\n.\r\nend")),
            C(b"..leading dot\r\nbare lf\r\n..\r\nend\r\n.\r\n"),
            S(b"250 2.0.0 Ok: queued as 224B824BD40\r\n"),
            Act(&quit),
            C(b"QUIT\r\n"),
            S(b"221 2.0.0 Bye\r\n"),
        ],
    );
    let ev = events(&log);
    assert_eq!(ev[0], Event::Ready { tls: false });
    assert!(matches!(ev[1], Event::BodyWritable { .. }));
    let Event::Delivered(report) = &ev[2] else {
        panic!("{ev:?}")
    };
    assert!(report.all_accepted());
    assert_eq!(
        report
            .message
            .as_ref()
            .unwrap()
            .enhanced()
            .unwrap()
            .to_string(),
        "2.0.0"
    );
    assert_eq!(report.body.dots_stuffed, 2);
    assert_eq!(report.body.line_ends_fixed, 1);
    assert_eq!(ev[3], Event::Closed { error: None });
}

#[test]
fn mail_params_size_8bitmime_smtputf8_dsn() {
    let caps: &[u8] = b"250-mx\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250 SIZE 100000\r\n";
    let act = |c: &mut Client, now| {
        let mut e = Envelope::new(mb("s@example.com"), [mb("用户@例子.广告")]);
        e.size = Some(1234);
        e.body = BodyType::EightBitMime;
        e.dsn_return = Some(DsnReturn::Headers);
        e.dsn_envelope_id = Some(XText::new("QQ314159", 100).unwrap());
        e.recipients[0].notify = Some(Notify::Never);
        c.send_envelope(now, &e).unwrap();
    };
    run_all(
        &plain(),
        &[
            S(GREETING),
            C(EHLO),
            S(caps),
            Act(&act),
            C("MAIL FROM:<s@example.com> SIZE=1234 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ314159\r\nRCPT TO:<用户@例子.广告> NOTIFY=NEVER\r\nDATA\r\n".as_bytes()),
        ],
    );
}

#[test]
fn missing_extensions_are_refused_before_sending() {
    let check = |c: &mut Client, now| {
        let mut e = env(&["a@example.org"]);
        e.body = BodyType::EightBitMime;
        assert_eq!(
            c.send_envelope(now, &e),
            Err(CommandError::ExtensionRequired {
                extension: "8BITMIME",
                reason: "an 8-bit body"
            })
        );
        let e = Envelope::new(mb("s@example.com"), [mb("ü@example.org")]);
        assert!(matches!(
            c.send_envelope(now, &e),
            Err(CommandError::ExtensionRequired {
                extension: "SMTPUTF8",
                ..
            })
        ));
        let mut e = env(&["a@example.org"]);
        e.dsn_return = Some(DsnReturn::Full);
        assert!(matches!(
            c.send_envelope(now, &e),
            Err(CommandError::ExtensionRequired {
                extension: "DSN",
                ..
            })
        ));
        assert_eq!(
            c.send_envelope(now, &env(&[])),
            Err(CommandError::NoRecipients)
        );
        assert!(c.is_ready());
    };
    let too_big = |c: &mut Client, now| {
        let mut e = env(&["a@example.org"]);
        e.size = Some(1001);
        assert_eq!(
            c.send_envelope(now, &e),
            Err(CommandError::MessageTooLarge {
                size: 1001,
                limit: 1000
            })
        );
    };
    run_all(
        &plain(),
        &[
            S(GREETING),
            C(EHLO),
            S(b"250-mx\r\n250 PIPELINING\r\n"),
            Act(&check),
            Act(&quit),
            C(b"QUIT\r\n"),
            S(b"221 bye\r\n"),
        ],
    );
    run_all(
        &plain(),
        &[S(GREETING), C(EHLO), S(CAPS_PIPE), Act(&too_big), C(b"")],
    );
}

#[test]
fn partial_recipient_rejection_is_a_delivery() {
    let log = run_all(
        &plain(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS_PIPE),
            Act(&send_one(&["a@example.org", "nobody@example.org", "c@example.org"])),
            C(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<nobody@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n"),
            S(b"250 ok\r\n250 ok\r\n550 5.1.1 <nobody@example.org>: Recipient address rejected\r\n250 ok\r\n354 go\r\n"),
            Act(&body(b"hi\r\n")),
            C(b"hi\r\n.\r\n"),
            S(b"250 queued\r\n"),
        ],
    );
    let Event::Delivered(report) = last_event(&log) else {
        panic!()
    };
    assert!(!report.all_accepted());
    let rejected: Vec<_> = report.rejected().map(|r| r.mailbox.to_string()).collect();
    assert_eq!(rejected, ["nobody@example.org"]);
    assert_eq!(report.accepted().count(), 2);
    assert_eq!(report.decisive_reply().unwrap().code(), 550);
}

#[test]
fn pipelined_failure_then_second_message_on_same_connection() {
    let log = run_all(
        &plain(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS_PIPE),
            Act(&send_one(&["gone@example.org"])),
            C(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<gone@example.org>\r\nDATA\r\n"),
            S(b"250 ok\r\n550 5.1.1 no such user\r\n554 5.5.1 Error: no valid recipients\r\n"),
            C(b"RSET\r\n"),
            S(b"250 2.0.0 Ok\r\n"),
            Act(&send_one(&["a@example.org"])),
            C(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n"),
            S(b"250 ok\r\n250 ok\r\n354 go\r\n"),
            Act(&body(b"second\r\n")),
            C(b"second\r\n.\r\n"),
            S(b"250 2.0.0 queued\r\n"),
        ],
    );
    let ev = events(&log);
    let Event::TransactionFailed(failed) = &ev[1] else {
        panic!("{ev:?}")
    };
    assert_eq!(failed.id.0, 0);
    // The recipient's refusal decides, not the `554 no valid recipients`
    // that the pipelined DATA got because of it.
    assert_eq!(failed.decisive_reply().unwrap().code(), 550);
    assert_eq!(failed.recipients[0].reply.as_ref().unwrap().code(), 550);
    let Event::Delivered(ok) = &ev[3] else {
        panic!("{ev:?}")
    };
    assert_eq!(ok.id.0, 1);
}

#[test]
fn data_accepted_without_recipients_sends_empty_message_then_rset() {
    let log = run_all(
        &plain(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS_PIPE),
            Act(&send_one(&["gone@example.org"])),
            C(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<gone@example.org>\r\nDATA\r\n"),
            S(b"250 ok\r\n550 no\r\n354 go\r\n"),
            C(b".\r\n"),
            S(b"554 no valid recipients\r\n"),
            C(b"RSET\r\n"),
            S(b"250 ok\r\n"),
        ],
    );
    assert!(matches!(last_event(&log), Event::TransactionFailed(_)));
}

#[test]
fn without_pipelining_commands_go_one_by_one() {
    let log = run_all(
        &plain(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS_PLAIN),
            Act(&send_one(&["a@example.org", "b@example.org"])),
            C(b"MAIL FROM:<sender@example.com>\r\n"),
            S(b"250 ok\r\n"),
            C(b"RCPT TO:<a@example.org>\r\n"),
            S(b"550 no\r\n"),
            C(b"RCPT TO:<b@example.org>\r\n"),
            S(b"250 ok\r\n"),
            C(b"DATA\r\n"),
            S(b"354 go\r\n"),
            Act(&body(b"x")),
            C(b"x\r\n.\r\n"),
            S(b"250 ok\r\n"),
            Act(&send_one(&["a@example.org"])),
            C(b"MAIL FROM:<sender@example.com>\r\n"),
            S(b"451 4.3.0 try later\r\n"),
            C(b"RSET\r\n"),
            S(b"250 ok\r\n"),
            Act(&send_one(&["a@example.org"])),
            C(b"MAIL FROM:<sender@example.com>\r\n"),
            S(b"250 ok\r\n"),
            C(b"RCPT TO:<a@example.org>\r\n"),
            S(b"550 no\r\n"),
            C(b"RSET\r\n"),
            S(b"250 ok\r\n"),
        ],
    );
    let ev = events(&log);
    assert!(matches!(&ev[2], Event::Delivered(r) if r.rejected().count() == 1));
    let Event::TransactionFailed(r) = &ev[3] else {
        panic!()
    };
    assert!(r.mail.as_ref().unwrap().is_transient());
    assert_eq!(r.recipients[0].reply, None);
    assert!(
        matches!(&ev[4], Event::TransactionFailed(r) if r.decisive_reply().unwrap().code() == 550)
    );
}

#[test]
fn bdat_when_chunking_and_pipelining() {
    let caps: &[u8] = b"250-mx\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 8BITMIME\r\n";
    let act = |c: &mut Client, now| {
        assert_eq!(c.write_body(now, b".a\nb").unwrap(), 4);
        assert_eq!(c.write_body(now, b"c\r").unwrap(), 2);
        c.finish_body(now).unwrap();
    };
    let log = run_all(
        &plain(),
        &[
            S(GREETING),
            C(EHLO),
            S(caps),
            Act(&send_one(&["a@example.org"])),
            C(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.org>\r\n"),
            S(b"250 ok\r\n250 ok\r\n"),
            Act(&act),
            // No dot-stuffing with BDAT; line ends repaired; each piece goes
            // out when the next arrives, the last one with LAST (and the
            // CR's LF).
            C(b"BDAT 5\r\n.a\r\nbBDAT 3 LAST\r\nc\r\n"),
            S(b"250 2.0.0 chunk ok\r\n250 2.0.0 queued\r\n"),
        ],
    );
    let Event::Delivered(r) = last_event(&log) else {
        panic!()
    };
    assert_eq!(r.data, None);
    assert_eq!(r.message.unwrap().message(), "queued");
}

#[test]
fn bdat_failure_drains_then_rset() {
    let caps: &[u8] = b"250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n";
    let act = |c: &mut Client, now| {
        c.write_body(now, b"one\r\n").unwrap();
        c.write_body(now, b"two\r\n").unwrap();
    };
    let after = |c: &mut Client, now| {
        assert!(matches!(
            c.write_body(now, b"more"),
            Err(CommandError::NotReady { .. })
        ));
    };
    let log = run_all(
        &plain(),
        &[
            S(GREETING),
            C(EHLO),
            S(caps),
            Act(&send_one(&["a@example.org"])),
            C(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.org>\r\n"),
            S(b"250 ok\r\n250 ok\r\n"),
            Act(&act),
            // "two" is held back for the next piece or LAST.
            C(b"BDAT 5\r\none\r\n"),
            S(b"552 5.3.4 too big\r\n"),
            Act(&after),
            C(b"RSET\r\n"),
            S(b"250 ok\r\n"),
        ],
    );
    let Event::TransactionFailed(r) = last_event(&log) else {
        panic!()
    };
    assert_eq!(r.message.unwrap().code(), 552);
}

#[test]
fn starttls_then_second_ehlo_and_xoauth2() {
    let config = ClientConfig::default();
    let auth = |c: &mut Client, now| {
        // Plaintext capabilities are gone; the post-TLS ones offer XOAUTH2 only.
        let caps = c.capabilities().unwrap();
        assert!(!caps.pipelining && !caps.starttls);
        let m = c
            .authenticate(
                now,
                &Credentials::bearer("user@example.com", "ya29.token"),
                None,
            )
            .unwrap();
        assert_eq!(m, Mechanism::XOAuth2);
    };
    let log = run_all(
        &config,
        &[
            S(b"220 smtp.office365.com ready\r\n"),
            C(EHLO),
            S(b"250-smtp.office365.com Hello\r\n250-PIPELINING\r\n250-AUTH PLAIN\r\n250 STARTTLS\r\n"),
            C(b"STARTTLS\r\n"),
            S(b"220 2.0.0 SMTP server ready\r\n"),
            Tls,
            C(EHLO),
            S(b"250-smtp.office365.com Hello\r\n250-SIZE 157286400\r\n250 AUTH LOGIN XOAUTH2\r\n"),
            Act(&auth),
            C(b"AUTH XOAUTH2 dXNlcj11c2VyQGV4YW1wbGUuY29tAWF1dGg9QmVhcmVyIHlhMjkudG9rZW4BAQ==\r\n"),
            S(b"235 2.7.0 Authentication successful\r\n"),
        ],
    );
    let ev = events(&log);
    assert_eq!(ev[0], Event::StartTls);
    assert_eq!(ev[1], Event::Ready { tls: true });
    assert!(matches!(
        &ev[2],
        Event::Authenticated {
            mechanism: Mechanism::XOAuth2,
            ..
        }
    ));
}

#[test]
fn stale_plaintext_capabilities_are_never_used() {
    let config = ClientConfig::default();
    let act = |c: &mut Client, now| {
        // PLAIN was offered before TLS only.
        assert!(matches!(
            c.authenticate(now, &Credentials::password("u", "p"), None),
            Err(CommandError::NoCommonMechanism { .. })
        ));
        // PIPELINING was offered before TLS only: MAIL goes alone.
        c.send_envelope(now, &env(&["a@example.org"])).unwrap();
    };
    run_all(
        &config,
        &[
            S(GREETING),
            C(EHLO),
            S(b"250-mx\r\n250-PIPELINING\r\n250-AUTH PLAIN\r\n250 STARTTLS\r\n"),
            C(b"STARTTLS\r\n"),
            S(b"220 go\r\n"),
            Act(&|c: &mut Client, _| assert!(c.capabilities().is_none())),
            Tls,
            C(EHLO),
            S(b"250-mx\r\n250 AUTH XOAUTH2\r\n"),
            Act(&act),
            C(b"MAIL FROM:<sender@example.com>\r\n"),
        ],
    );
}

#[test]
fn injected_bytes_after_starttls_are_fatal() {
    // Same read as the 220 (the whole run), or a later read (the split runs):
    // the result must be the same.
    let log = run_all(
        &ClientConfig::default(),
        &[
            S(GREETING),
            C(EHLO),
            S(b"250-mx\r\n250 STARTTLS\r\n"),
            C(b"STARTTLS\r\n"),
            S(b"220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n"),
            Act(&|c: &mut Client, now| {
                assert!(matches!(
                    c.handle_tls_established(now),
                    Err(CommandError::Failed(_))
                ));
                assert!(c.poll_transmit().is_none());
                assert_eq!(c.poll_timeout(), None);
            }),
        ],
    );
    assert_eq!(errors(&log), vec![Error::PlaintextAfterStartTls]);
    assert_eq!(
        last_event(&log),
        Event::Closed {
            error: Some(Error::PlaintextAfterStartTls)
        }
    );
    // A separate later read before the handshake.
    let log = run_all(
        &ClientConfig::default(),
        &[
            S(GREETING),
            C(EHLO),
            S(b"250-mx\r\n250 STARTTLS\r\n"),
            C(b"STARTTLS\r\n"),
            S(b"220 go ahead\r\n"),
            S(b"x"),
        ],
    );
    assert_eq!(errors(&log), vec![Error::PlaintextAfterStartTls]);
}

#[test]
fn starttls_required_but_refused_or_missing() {
    let log = run_all(
        &ClientConfig::default(),
        &[
            S(GREETING),
            C(EHLO),
            S(b"250-mx\r\n250-AUTH PLAIN\r\n250 STARTTLS\r\n"),
            C(b"STARTTLS\r\n"),
            S(b"454 4.7.0 TLS not available due to local problem\r\n"),
            Act(&|c: &mut Client, now| {
                assert!(matches!(
                    c.authenticate(now, &Credentials::password("u", "p"), None),
                    Err(CommandError::Failed(Error::StartTlsRefused { .. }))
                ));
            }),
        ],
    );
    assert!(matches!(&errors(&log)[..], [Error::StartTlsRefused { reply }] if reply.code() == 454));
    let log = run_all(
        &ClientConfig::default(),
        &[S(GREETING), C(EHLO), S(b"250-mx\r\n250 AUTH PLAIN\r\n")],
    );
    assert_eq!(errors(&log), vec![Error::StartTlsUnavailable]);
}

#[test]
fn opportunistic_tls_never_sends_credentials_in_clear() {
    let config = ClientConfig::default().tls(Security::StartTlsOpportunistic);
    let act = |c: &mut Client, now| {
        assert!(!c.is_tls());
        assert_eq!(
            c.authenticate(now, &Credentials::password("u", "p"), None),
            Err(CommandError::CredentialsWithoutTls)
        );
    };
    let log = run_all(
        &config,
        &[
            S(GREETING),
            C(EHLO),
            S(b"250-mx\r\n250-AUTH PLAIN\r\n250 STARTTLS\r\n"),
            C(b"STARTTLS\r\n"),
            S(b"502 5.5.1 not now\r\n"),
            Act(&act),
            C(b""),
        ],
    );
    assert_eq!(events(&log), vec![Event::Ready { tls: false }]);
    // Opting in by name sends them.
    let config = ClientConfig::default()
        .tls(Security::Plaintext)
        .dangerous_allow_credentials_without_tls(true);
    run_all(
        &config,
        &[
            S(GREETING),
            C(EHLO),
            S(b"250-mx\r\n250 AUTH PLAIN\r\n"),
            Act(&|c: &mut Client, now| {
                c.authenticate(now, &Credentials::password("tim", "tanstaaftanstaaf"), None)
                    .unwrap();
            }),
            C(b"AUTH PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\n"),
        ],
    );
}

fn tls_session<'a>(caps: &'a [u8], rest: Vec<support::Step<'a>>) -> Vec<support::Step<'a>> {
    let mut steps = vec![S(GREETING), C(EHLO), S(caps)];
    steps.extend(rest);
    steps
}

fn implicit() -> ClientConfig {
    ClientConfig::default()
        .tls(Security::ImplicitTls)
        .server(ServerIdentity::new("smtp.example.com", 465))
}

#[test]
fn xoauth2_error_challenge_is_acknowledged_and_reported() {
    // smtp.gmail.com, vertx-mail-client MailAuthChainTest (vectors/oauth.json).
    let caps: &[u8] = b"250-smtp.gmail.com at your service, [209.132.188.80]\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n";
    let creds = Credentials::bearer("xxx", "yyy");
    let first = |c: &mut Client, now| {
        c.authenticate(now, &creds, Some(Mechanism::XOAuth2))
            .unwrap();
    };
    let second = |c: &mut Client, now| {
        c.authenticate(now, &creds, Some(Mechanism::XOAuth2))
            .unwrap();
    };
    let log = run_all(
        &implicit(),
        &tls_session(
            caps,
            vec![
                Act(&first),
                C(b"AUTH XOAUTH2 dXNlcj14eHgBYXV0aD1CZWFyZXIgeXl5AQE=\r\n"),
                S(b"334 eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==\r\n"),
                C(b"\r\n"),
                S(b"535-5.7.8 Username and Password not accepted. Learn more at\r\n535 5.7.8  https://support.google.com/mail/?p=BadCredentials o8sm3958210pjs.6 - gsmtp\r\n"),
                Act(&second),
                C(b"AUTH XOAUTH2 dXNlcj14eHgBYXV0aD1CZWFyZXIgeXl5AQE=\r\n"),
                S(b"235 2.7.0 Accepted\r\n"),
            ],
        ),
    );
    let ev = events(&log);
    let Event::AuthFailed(failure) = &ev[1] else {
        panic!("{ev:?}")
    };
    assert_eq!(failure.kind, AuthFailureKind::TokenRejected);
    assert!(failure.token_refresh_may_help());
    assert_eq!(
        failure.challenge_text().unwrap(),
        r#"{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}"#
    );
    assert_eq!(failure.reply.enhanced().unwrap().to_string(), "5.7.8");
    assert!(matches!(ev[2], Event::Authenticated { .. }));
}

#[test]
fn oauthbearer_error_challenge_answers_aq() {
    let caps: &[u8] = b"250-mx\r\n250 AUTH OAUTHBEARER XOAUTH2\r\n";
    let log = run_all(
        &implicit(),
        &tls_session(
            caps,
            vec![
                Act(&|c: &mut Client, now| {
                    let m = c.authenticate(now, &Credentials::bearer("user", "mF_9.B5f-4.1JqM"), None).unwrap();
                    assert_eq!(m, Mechanism::OAuthBearer);
                }),
                C(b"AUTH OAUTHBEARER bixhPXVzZXIsAWhvc3Q9c210cC5leGFtcGxlLmNvbQFwb3J0PTQ2NQFhdXRoPUJlYXJlciBtRl85LkI1Zi00LjFKcU0BAQ==\r\n"),
                S(b"334 eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NvcGUiOiJleGFtcGxlX3Njb3BlIiwib3BlbmlkLWNvbmZpZ3VyYXRpb24iOiJodHRwczovL2V4YW1wbGUuY29tLy53ZWxsLWtub3duL29wZW5pZC1jb25maWd1cmF0aW9uIn0=\r\n"),
                C(b"AQ==\r\n"),
                S(b"535-Username and Password not accepted. Learn more at\r\n535 http://support.example.com/mail/oauth\r\n"),
            ],
        ),
    );
    let Event::AuthFailed(f) = last_event(&log) else {
        panic!()
    };
    assert_eq!(f.kind, AuthFailureKind::TokenRejected);
    assert!(f.challenge_text().unwrap().contains("invalid_token"));
}

#[test]
fn long_token_uses_two_step_form() {
    let token: &'static str = Box::leak("t".repeat(600).into_boxed_str());
    let creds = Credentials::bearer("someuser@example.com", token);
    let mut expected = b"AUTH XOAUTH2\r\n".to_vec();
    let mut response = Vec::new();
    {
        use base64::Engine as _;
        let raw = format!("user=someuser@example.com\x01auth=Bearer {token}\x01\x01");
        response.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(raw)
                .as_bytes(),
        );
        response.extend_from_slice(b"\r\n");
    }
    expected.truncate(expected.len());
    let log = run_all(
        &implicit(),
        &tls_session(
            b"250-mx\r\n250 AUTH XOAUTH2\r\n",
            vec![
                Act(&|c: &mut Client, now| {
                    c.authenticate(now, &creds, None).unwrap();
                }),
                C(&expected),
                // Exchange Online sends a bare "334" with no text.
                S(b"334\r\n"),
                C(&response),
                S(b"235 2.7.0 Authentication successful\r\n"),
            ],
        ),
    );
    assert!(matches!(last_event(&log), Event::Authenticated { .. }));
}

#[test]
fn login_two_prompts() {
    let log = run_all(
        &implicit(),
        &tls_session(
            b"250-mx\r\n250 AUTH LOGIN\r\n",
            vec![
                Act(&|c: &mut Client, now| {
                    c.authenticate(now, &Credentials::password("usér", "pässwörd"), None)
                        .unwrap();
                }),
                C(b"AUTH LOGIN\r\n"),
                S(b"334 VXNlcm5hbWU6\r\n"),
                C(b"dXPDqXI=\r\n"),
                S(b"334 UGFzc3dvcmQ6\r\n"),
                C(b"cMOkc3N3w7ZyZA==\r\n"),
                S(b"235 ok\r\n"),
            ],
        ),
    );
    assert!(matches!(
        last_event(&log),
        Event::Authenticated {
            mechanism: Mechanism::Login,
            ..
        }
    ));
}

#[test]
fn endless_challenges_are_cancelled() {
    let log = run_all(
        &implicit(),
        &tls_session(
            b"250-mx\r\n250 AUTH XOAUTH2 PLAIN\r\n",
            vec![
                Act(&|c: &mut Client, now| {
                    c.authenticate(now, &Credentials::bearer("u", "tok"), None)
                        .unwrap();
                }),
                C(b"AUTH XOAUTH2 dXNlcj11AWF1dGg9QmVhcmVyIHRvawEB\r\n"),
                S(b"334 e30=\r\n"),
                C(b"\r\n"),
                S(b"334 e30=\r\n"),
                C(b"*\r\n"),
                S(b"501 5.5.2 cancelled\r\n"),
                // PLAIN takes no challenge at all.
                Act(&|c: &mut Client, now| {
                    c.authenticate(now, &Credentials::password("u", "p"), None)
                        .unwrap();
                }),
                C(b"AUTH PLAIN AHUAcA==\r\n"),
                S(b"334 what\r\n"),
                C(b"*\r\n"),
                S(b"501 cancelled\r\n"),
            ],
        ),
    );
    let ev = events(&log);
    for e in &ev[1..] {
        let Event::AuthFailed(f) = e else {
            panic!("{e:?}")
        };
        assert_eq!(f.kind, AuthFailureKind::Cancelled);
    }
    assert_eq!(ev.len(), 3);
}

#[test]
fn a_334_after_cancel_is_fatal() {
    let log = run_all(
        &implicit(),
        &tls_session(
            b"250-mx\r\n250 AUTH PLAIN\r\n",
            vec![
                Act(&|c: &mut Client, now| {
                    c.authenticate(now, &Credentials::password("u", "p"), None)
                        .unwrap();
                }),
                C(b"AUTH PLAIN AHUAcA==\r\n"),
                S(b"334 x\r\n"),
                C(b"*\r\n"),
                S(b"334 y\r\n"),
            ],
        ),
    );
    assert!(matches!(
        &errors(&log)[..],
        [Error::UnexpectedReply {
            phase: Phase::Auth,
            ..
        }]
    ));
}

#[test]
fn auth_failure_classification() {
    let cases: [(&[u8], AuthFailureKind); 4] = [
        (
            b"535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.\r\n",
            AuthFailureKind::Configuration,
        ),
        (b"454 4.7.0 Temporary authentication failure\r\n", AuthFailureKind::Temporary),
        (
            b"535 5.7.3 Authentication unsuccessful [SN2PR00CA0018.namprd00.prod.outlook.com]\r\n",
            AuthFailureKind::TokenRejected,
        ),
        (b"504 5.5.4 Unrecognized authentication type\r\n", AuthFailureKind::Configuration),
    ];
    for (reply, kind) in cases {
        let log = run_all(
            &implicit(),
            &tls_session(
                b"250-mx\r\n250 AUTH XOAUTH2\r\n",
                vec![
                    Act(&|c: &mut Client, now| {
                        c.authenticate(now, &Credentials::bearer("u", "tok"), None)
                            .unwrap();
                    }),
                    C(b"AUTH XOAUTH2 dXNlcj11AWF1dGg9QmVhcmVyIHRvawEB\r\n"),
                    S(reply),
                ],
            ),
        );
        let Event::AuthFailed(f) = last_event(&log) else {
            panic!()
        };
        assert_eq!(f.kind, kind, "{reply:?}");
        assert_eq!(f.challenge, None);
    }
}

#[test]
fn bare_lf_replies_and_helo_fallback() {
    let log = run_all(
        &plain(),
        &[
            S(b"220 old.example.com\n"),
            C(EHLO),
            S(b"502 5.5.2 Error: command not recognized\n"),
            C(b"HELO [127.0.0.1]\r\n"),
            S(b"250 old.example.com\n"),
            Act(&send_one(&["a@example.org"])),
            C(b"MAIL FROM:<sender@example.com>\r\n"),
            S(b"250 ok\n"),
            C(b"RCPT TO:<a@example.org>\r\n"),
            S(b"250 ok\n"),
            C(b"DATA\r\n"),
            S(b"354 go\n"),
            Act(&body(b"hello\n")),
            C(b"hello\r\n.\r\n"),
            S(b"250 ok\n"),
        ],
    );
    assert!(matches!(last_event(&log), Event::Delivered(_)));
}

#[test]
fn malformed_and_oversized_replies_are_fatal() {
    for bad in [
        &b"2500 OK\r\n"[..],
        b"25O OK\r\n",
        b"250-a\r\n251 b\r\n",
        b"hello\r\n",
    ] {
        let log = run_all(&plain(), &[S(GREETING), C(EHLO), S(bad)]);
        assert!(
            matches!(
                &errors(&log)[..],
                [Error::Reply {
                    phase: Phase::Ehlo,
                    ..
                }]
            ),
            "{bad:?}: {log:?}"
        );
    }
    let mut config = plain();
    config.reply_limits.max_line_len = 64;
    let long = format!("250 {}\r\n", "x".repeat(100));
    let log = run_all(&config, &[S(GREETING), C(EHLO), S(long.as_bytes())]);
    assert!(matches!(
        &errors(&log)[..],
        [Error::Reply {
            error: ReplyError::LineTooLong { limit: 64 },
            ..
        }]
    ));
}

#[test]
fn greeting_refusal_and_421_anywhere() {
    let log = run_all(&plain(), &[S(b"554 5.7.1 go away\r\n")]);
    assert!(matches!(
        &errors(&log)[..],
        [Error::Refused {
            phase: Phase::Greeting,
            ..
        }]
    ));
    let log = run_all(
        &plain(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS_PIPE),
            Act(&send_one(&["a@example.org"])),
            C(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n"),
            S(b"250 ok\r\n421 4.3.2 Service shutting down\r\n"),
        ],
    );
    assert!(matches!(
        &errors(&log)[..],
        [Error::ServiceUnavailable { phase: Phase::Rcpt, reply }] if reply.code() == 421
    ));
}

#[test]
fn timeouts_name_the_phase_and_never_spin() {
    let log = run_all(
        &plain(),
        &[
            Wait(Duration::from_secs(299)),
            Wait(Duration::from_millis(999)),
            Wait(Duration::from_millis(1)),
            Act(&|c: &mut Client, now| {
                assert_eq!(c.poll_timeout(), None);
                assert_eq!(
                    c.handle_timeout(now),
                    Err(Error::Timeout {
                        phase: Phase::Greeting
                    })
                );
            }),
        ],
    );
    assert_eq!(
        errors(&log),
        vec![Error::Timeout {
            phase: Phase::Greeting
        }]
    );

    let log = run_all(
        &plain(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS_PIPE),
            Act(&send_one(&["a@example.org"])),
            C(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n"),
            Wait(Duration::from_secs(299)),
            S(b"250 ok\r\n250 ok\r\n"),
            // DATA initiation has 2 minutes from the last reply.
            Wait(Duration::from_secs(119)),
            Wait(Duration::from_secs(1)),
        ],
    );
    assert_eq!(
        errors(&log),
        vec![Error::Timeout {
            phase: Phase::DataInit
        }]
    );

    let log = run_all(
        &plain(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS_PIPE),
            Act(&send_one(&["a@example.org"])),
            C(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n"),
            S(b"250 ok\r\n250 ok\r\n354 go\r\n"),
            Act(&body(b"x\r\n")),
            C(b"x\r\n.\r\n"),
            Wait(Duration::from_secs(599)),
            Wait(Duration::from_secs(1)),
        ],
    );
    assert_eq!(
        errors(&log),
        vec![Error::Timeout {
            phase: Phase::DataEnd
        }]
    );
}

#[test]
fn eof_mid_dialogue_and_after_quit() {
    let log = run_all(&plain(), &[S(GREETING), C(EHLO), Eof]);
    assert_eq!(
        errors(&log),
        vec![Error::ConnectionClosed { phase: Phase::Ehlo }]
    );
    let log = run_all(
        &plain(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS_PIPE),
            Act(&quit),
            C(b"QUIT\r\n"),
            Eof,
        ],
    );
    assert_eq!(last_event(&log), Event::Closed { error: None });
    assert!(errors(&log).is_empty());
}

#[test]
fn errors_are_sticky_and_silence_the_machine() {
    let log = run_all(
        &plain(),
        &[
            S(b"25O bad\r\n"),
            Act(&|c: &mut Client, now| {
                let first = c.error().cloned().unwrap();
                assert_eq!(c.handle_input(now, GREETING), Err(first.clone()));
                assert_eq!(c.handle_eof(now), Err(first.clone()));
                assert_eq!(c.handle_timeout(now), Err(first.clone()));
                assert!(c.poll_transmit().is_none());
                assert!(c.poll_event().is_none());
                assert_eq!(c.quit(now), Err(CommandError::Failed(first)));
                assert!(c.is_closed());
            }),
        ],
    );
    let errs = errors(&log);
    assert_eq!(errs.len(), 1);
    // Closed is reported once.
    assert_eq!(events(&log).len(), 1);
    assert!(!log.iter().any(|e| matches!(e, Entry::Sent(_))));
}

#[test]
fn body_errors_abandon_the_connection() {
    let long = |c: &mut Client, now| {
        let line = [b'x'; 1200];
        assert!(matches!(
            c.write_body(now, &line),
            Err(CommandError::Failed(Error::Body(_)))
        ));
        assert!(c.poll_transmit().is_none());
    };
    let log = run_all(
        &plain(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS_PIPE),
            Act(&send_one(&["a@example.org"])),
            C(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n"),
            S(b"250 ok\r\n250 ok\r\n354 go\r\n"),
            Act(&long),
        ],
    );
    assert!(matches!(
        last_event(&log),
        Event::Closed {
            error: Some(Error::Body(_))
        }
    ));
    // With long lines allowed they are sent and counted.
    let config = plain().long_lines(LongLines::Allow);
    let line: &'static [u8] = Box::leak(vec![b'y'; 1200].into_boxed_slice());
    let mut wire = line.to_vec();
    wire.extend_from_slice(b"\r\n.\r\n");
    let log = run_all(
        &config,
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS_PIPE),
            Act(&send_one(&["a@example.org"])),
            C(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n"),
            S(b"250 ok\r\n250 ok\r\n354 go\r\n"),
            Act(&body(line)),
            C(&wire),
            S(b"250 ok\r\n"),
        ],
    );
    let Event::Delivered(r) = last_event(&log) else {
        panic!()
    };
    assert_eq!(r.body.long_lines, 1);
}

#[test]
fn write_body_applies_backpressure() {
    let config = plain().max_pending_body(100);
    let mut client = Client::new(config, std::time::Instant::now());
    let now = std::time::Instant::now();
    let feed = |c: &mut Client, bytes: &[u8]| {
        c.handle_input(now, bytes).unwrap();
        while let Some(b) = c.poll_transmit() {
            let n = b.len();
            c.advance_transmit(n);
        }
    };
    feed(&mut client, GREETING);
    feed(&mut client, CAPS_PIPE);
    client.send_envelope(now, &env(&["a@example.org"])).unwrap();
    feed(&mut client, b"250 ok\r\n250 ok\r\n354 go\r\n");
    let data = [b'a'; 500];
    let mut taken = 0;
    loop {
        let n = client.write_body(now, &data[taken..]).unwrap();
        if n == 0 {
            break;
        }
        taken += n;
        // The output of a chunk is at most twice its input.
        assert!(client.poll_transmit().unwrap().len() <= 100);
    }
    assert!(taken > 0 && taken < 100, "{taken}");
    let pending = client.poll_transmit().unwrap().len();
    client.advance_transmit(pending);
    assert_eq!(client.write_body(now, &data[taken..]).unwrap(), 50);
}

#[test]
fn commands_out_of_order_are_refused_without_effect() {
    let mut c = Client::new(plain(), std::time::Instant::now());
    let now = std::time::Instant::now();
    assert!(matches!(
        c.send_envelope(now, &env(&["a@example.org"])),
        Err(CommandError::NotReady { .. })
    ));
    assert!(matches!(
        c.write_body(now, b"x"),
        Err(CommandError::NotReady { .. })
    ));
    assert!(matches!(
        c.handle_tls_established(now),
        Err(CommandError::NotReady { .. })
    ));
    assert!(c.poll_transmit().is_none());
    c.handle_input(now, GREETING).unwrap();
    assert_eq!(c.poll_transmit().unwrap(), EHLO);
    let text = format!("{c:?}");
    assert!(text.contains("waiting for the EHLO reply"), "{text}");
}

#[test]
fn debug_output_never_shows_secrets() {
    let mut c = Client::new(implicit(), std::time::Instant::now());
    let now = std::time::Instant::now();
    c.handle_input(now, GREETING).unwrap();
    c.handle_input(now, b"250-mx\r\n250 AUTH PLAIN XOAUTH2\r\n")
        .unwrap();
    let creds = Credentials::bearer("user@example.com", "SECRET-TOKEN-123");
    c.authenticate(now, &creds, Some(Mechanism::XOAuth2))
        .unwrap();
    for text in [format!("{c:?}"), format!("{creds:?}")] {
        assert!(!text.contains("SECRET"), "{text}");
    }
    let pw = Credentials::password("user", "hunter2");
    assert!(!format!("{pw:?}").contains("hunter2"));
}
