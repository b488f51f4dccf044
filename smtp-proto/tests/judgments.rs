//! The judgments the transport and the command line only map: is a failure
//! transient, did any byte of the message leave, which stage failed, what
//! does an admin do about it. Byte scripts, split anywhere, no sockets.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod support;

use postern_smtp::diagnose::{Context, diagnose};
use postern_smtp::{
    Client, ClientConfig, CommandError, Envelope, Error, Event, Mailbox, Phase, ReplyParser,
    Security, Stage,
};
use support::{Step::*, last_event, run_all};

fn plain() -> ClientConfig {
    ClientConfig::default().tls(Security::Plaintext)
}

fn send(c: &mut Client, now: std::time::Instant) {
    let env = Envelope::new(
        Mailbox::parse("a@example.com").unwrap(),
        [Mailbox::parse("b@example.com").unwrap()],
    );
    c.send_envelope(now, &env).unwrap();
}

fn body(c: &mut Client, now: std::time::Instant) {
    c.write_body(now, b"Subject: x\r\n\r\nhi\r\n").unwrap();
    c.finish_body(now).unwrap();
}

const GREETING: &[u8] = b"220 mx.example.com ESMTP\r\n";
const CAPS: &[u8] = b"250-mx.example.com\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n";
const EHLO: &[u8] = b"EHLO [127.0.0.1]\r\n";
const GROUP: &[u8] = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n";
const BODY: &[u8] = b"Subject: x\r\n\r\nhi\r\n.\r\n";

fn closing_error(log: &[support::Entry]) -> Error {
    match last_event(log) {
        Event::Closed { error: Some(e) } => e,
        other => panic!("expected a fatal close, got {other:?}"),
    }
}

#[test]
fn a_connection_dropped_before_the_message_can_be_resent() {
    // An idle pooled connection the server already dropped: EOF while the
    // client waits for the MAIL/RCPT/DATA replies.
    let log = run_all(
        &plain(),
        &[S(GREETING), C(EHLO), S(CAPS), Act(&send), C(GROUP), Eof],
    );
    let e = closing_error(&log);
    assert_eq!(e, Error::ConnectionClosed { phase: Phase::Mail });
    assert!(e.ended_before_message());
    assert!(e.is_transient());
    assert_eq!(e.stage(), Stage::Transaction);

    // 421 to the pipelined group: the server is closing, nothing accepted.
    let log = run_all(
        &plain(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS),
            Act(&send),
            C(GROUP),
            S(b"421 4.4.2 idle too long\r\n"),
        ],
    );
    assert!(closing_error(&log).ended_before_message());
}

#[test]
fn a_connection_dropped_after_the_final_dot_may_have_delivered() {
    let log = run_all(
        &plain(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS),
            Act(&send),
            C(GROUP),
            S(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n"),
            Act(&body),
            C(BODY),
            Eof,
        ],
    );
    let e = closing_error(&log);
    assert_eq!(
        e,
        Error::ConnectionClosed {
            phase: Phase::DataEnd
        }
    );
    assert!(
        !e.ended_before_message(),
        "the message may have been accepted"
    );
    assert_eq!(e.stage(), Stage::Transaction);
}

#[test]
fn permanent_failures_are_not_transient() {
    let reply = |wire: &[u8]| ReplyParser::default().parse(wire).unwrap().1.unwrap();
    assert!(!Error::StartTlsUnavailable.is_transient());
    assert!(
        !Error::Refused {
            phase: Phase::Greeting,
            reply: reply(b"554 5.7.1 no service for you\r\n")
        }
        .is_transient()
    );
    assert!(
        Error::Refused {
            phase: Phase::Greeting,
            reply: reply(b"450 4.3.2 try later\r\n")
        }
        .is_transient()
    );
    assert!(
        Error::Timeout {
            phase: Phase::Greeting
        }
        .is_transient()
    );
    assert_eq!(
        Error::Timeout {
            phase: Phase::Greeting
        }
        .stage(),
        Stage::Greeting
    );
    assert_eq!(Error::PlaintextAfterStartTls.stage(), Stage::StartTls);
    let missing = CommandError::ExtensionRequired {
        extension: "SMTPUTF8",
        reason: "non-ASCII addresses",
    };
    assert!(!missing.is_transient());
    assert_eq!(missing.stage(), Stage::Transaction);
    assert_eq!(CommandError::AuthNotOffered.stage(), Stage::Auth);
}

#[test]
fn a_body_the_client_refuses_is_permanent() {
    // 8-bit bytes in a body declared 7-bit can never be sent as they are.
    let bad = |c: &mut Client, now: std::time::Instant| {
        assert!(
            c.write_body(now, b"Subject: x\r\n\r\nj\xc3\xb6ran\r\n")
                .is_err()
        );
    };
    let log = run_all(
        &plain(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS),
            Act(&send),
            C(GROUP),
            S(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n"),
            Act(&bad),
            C(b""),
        ],
    );
    let e = closing_error(&log);
    assert!(matches!(e, Error::Body(_)), "{e:?}");
    assert!(!e.is_transient());
}

#[test]
fn transaction_reports_carry_their_verdict_and_diagnosis() {
    let send_as = |c: &mut Client, now: std::time::Instant| send(c, now);
    let log = run_all(
        &plain(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS),
            Act(&send_as),
            C(GROUP),
            S(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n"),
            Act(&body),
            C(BODY),
            S(b"554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied [BN6PR.prod.outlook.com]\r\n"),
        ],
    );
    let Event::TransactionFailed(report) = last_event(&log) else {
        panic!("expected a failed transaction");
    };
    assert!(!report.is_transient());
    assert_eq!(report.context(), Context::Data);
    assert_eq!(
        report.diagnosis().map(|d| d.id),
        Some("ms.smtp.send_as_denied")
    );

    let log = run_all(
        &plain(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS),
            Act(&send),
            C(GROUP),
            S(b"451 4.3.0 busy\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n"),
            C(b"RSET\r\n"),
            S(b"250 2.0.0 reset\r\n"),
        ],
    );
    let Event::TransactionFailed(report) = last_event(&log) else {
        panic!("expected a failed transaction");
    };
    assert_eq!(report.context(), Context::Mail);
    assert!(report.is_transient(), "MAIL got 451");
}

#[test]
fn one_table_classifies_auth_and_diagnoses_it() {
    use postern_smtp::{AuthFailureKind, Credentials, Mechanism};
    let auth = |c: &mut Client, now: std::time::Instant| {
        c.authenticate(
            now,
            &Credentials::bearer("u@example.com", "tok"),
            Some(Mechanism::XOAuth2),
        )
        .unwrap();
    };
    let config = plain().dangerous_allow_credentials_without_tls(true);
    for (wire, kind, id) in [
        (
            &b"535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.\r\n"[..],
            AuthFailureKind::Configuration,
            Some("ms.smtp.auth_disabled"),
        ),
        (
            b"535 5.7.3 Authentication unsuccessful [X.prod.outlook.com]\r\n",
            AuthFailureKind::TokenRejected,
            Some("ms.smtp.mailbox_not_mapped"),
        ),
        (
            b"538 5.7.11 Encryption required for requested authentication mechanism\r\n",
            AuthFailureKind::Configuration,
            Some("smtp.tls.required"),
        ),
        (b"504 5.5.4 unrecognized mechanism\r\n", AuthFailureKind::Configuration, None),
        (
            b"454 4.7.0 Temporary authentication failure\r\n",
            AuthFailureKind::Temporary,
            Some("smtp.auth.temporary"),
        ),
    ] {
        let log = run_all(
            &config,
            &[
                S(GREETING),
                C(EHLO),
                S(b"250-mx.example.com\r\n250 AUTH XOAUTH2\r\n"),
                Act(&auth),
                C(b"AUTH XOAUTH2 dXNlcj11QGV4YW1wbGUuY29tAWF1dGg9QmVhcmVyIHRvawEB\r\n"),
                S(wire),
            ],
        );
        let Event::AuthFailed(f) = last_event(&log) else {
            panic!("expected an AUTH failure");
        };
        assert_eq!(f.kind, kind, "{}", String::from_utf8_lossy(wire));
        assert_eq!(f.diagnosis().map(|d| d.id), id);
        assert_eq!(
            f.diagnosis(),
            diagnose(Context::Auth(Mechanism::XOAuth2), &f.reply),
            "the failure and diagnose read the same table"
        );
        assert_eq!(f.is_transient(), kind == AuthFailureKind::Temporary);
    }
}

#[test]
fn exchange_not_authenticated_is_not_a_tls_problem() {
    let r = ReplyParser::default()
        .parse(b"530 5.7.57 Client not authenticated to send mail. [X.prod.outlook.com]\r\n")
        .unwrap()
        .1
        .unwrap();
    let d = diagnose(Context::Mail, &r).unwrap();
    assert_eq!(d.id, "ms.smtp.not_authenticated");
    assert_eq!(d.step, "authentication");
}

mod session_end {
    //! Each way a session ends: QUIT when it is usable, abandoned (with the
    //! reason) when it is not.
    use super::*;
    use postern_smtp::{AbandonReason, BodyError, Credentials, Mechanism, SessionEnd};
    use std::time::Duration;

    fn expect(want: SessionEnd) -> impl Fn(&mut Client, std::time::Instant) {
        move |c, _| assert_eq!(c.session_end(), want)
    }

    fn quit(c: &mut Client, now: std::time::Instant) {
        c.quit(now).unwrap();
    }

    #[test]
    fn a_refused_auth_ends_with_quit() {
        let config = plain().dangerous_allow_credentials_without_tls(true);
        let auth = |c: &mut Client, now: std::time::Instant| {
            c.authenticate(
                now,
                &Credentials::password("u", "p"),
                Some(Mechanism::Plain),
            )
            .unwrap();
        };
        run_all(
            &config,
            &[
                S(GREETING),
                C(EHLO),
                S(b"250-mx.example.com\r\n250 AUTH PLAIN\r\n"),
                Act(&auth),
                C(b"AUTH PLAIN AHUAcA==\r\n"),
                S(b"535 5.7.8 Authentication credentials invalid\r\n"),
                Act(&expect(SessionEnd::Quit)),
                Act(&quit),
                C(b"QUIT\r\n"),
                S(b"221 2.0.0 Bye\r\n"),
                Act(&expect(SessionEnd::Closed)),
            ],
        );
    }

    #[test]
    fn a_refused_transaction_after_rset_ends_with_quit() {
        run_all(
            &plain(),
            &[
                S(GREETING),
                C(EHLO),
                S(CAPS),
                Act(&send),
                C(GROUP),
                Act(&expect(SessionEnd::Abandon {
                    reason: AbandonReason::Busy {
                        state: "in a mail transaction",
                    },
                })),
                S(b"550 5.7.1 no\r\n554 5.5.1 no valid recipients\r\n554 5.5.1 no\r\n"),
                C(b"RSET\r\n"),
                S(b"250 2.0.0 reset\r\n"),
                Act(&expect(SessionEnd::Quit)),
                Act(&quit),
                C(b"QUIT\r\n"),
                Eof,
                Act(&expect(SessionEnd::Closed)),
            ],
        );
    }

    #[test]
    fn a_refused_body_abandons_the_session_without_a_command() {
        let long = |c: &mut Client, now: std::time::Instant| {
            let line = vec![b'x'; 1200];
            assert!(c.write_body(now, &line).is_err());
            assert!(c.quit(now).is_err(), "no command after the abandoned DATA");
        };
        let log = run_all(
            &plain(),
            &[
                S(GREETING),
                C(EHLO),
                S(CAPS),
                Act(&send),
                C(GROUP),
                S(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n"),
                Act(&long),
                C(b""),
            ],
        );
        let e = closing_error(&log);
        assert!(
            matches!(e, Error::Body(BodyError::LineTooLong { .. })),
            "{e:?}"
        );
        let end = |c: &mut Client, _: std::time::Instant| match c.session_end() {
            SessionEnd::Abandon {
                reason: AbandonReason::Failed(Error::Body(_)),
            } => {}
            other => panic!("{other:?}"),
        };
        run_all(
            &plain(),
            &[
                S(GREETING),
                C(EHLO),
                S(CAPS),
                Act(&send),
                C(GROUP),
                S(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n"),
                Act(&long),
                C(b""),
                Act(&end),
            ],
        );
    }

    #[test]
    fn a_timeout_or_a_421_abandons_with_the_reason() {
        run_all(
            &plain(),
            &[
                S(GREETING),
                C(EHLO),
                S(CAPS),
                Act(&send),
                C(GROUP),
                Wait(Duration::from_secs(301)),
                Act(&expect(SessionEnd::Abandon {
                    reason: AbandonReason::Failed(Error::Timeout { phase: Phase::Mail }),
                })),
            ],
        );
        let log = run_all(
            &plain(),
            &[S(GREETING), C(EHLO), S(b"421 4.3.2 shutting down\r\n")],
        );
        let e = closing_error(&log);
        assert!(matches!(e, Error::ServiceUnavailable { .. }), "{e:?}");
    }
}

/// Every recipient refused, then the pipelined DATA refused because of it:
/// the recipients' replies decide, and a `450` makes the failure temporary.
#[test]
fn recipients_decide_when_all_are_refused() {
    let outcome = |rcpt: &'static [u8]| {
        let log = run_all(
            &plain(),
            &[
                S(GREETING),
                C(EHLO),
                S(CAPS),
                Act(&send),
                C(GROUP),
                S(b"250 2.1.0 ok\r\n"),
                S(rcpt),
                S(b"554 5.5.1 Error: no valid recipients\r\n"),
                C(b"RSET\r\n"),
                S(b"250 2.0.0 reset\r\n"),
            ],
        );
        let Event::TransactionFailed(report) = last_event(&log) else {
            panic!("expected a failed transaction");
        };
        report
    };
    let busy = outcome(b"450 4.2.1 mailbox busy, try later\r\n");
    assert_eq!(busy.decisive_reply().map(|r| r.code()), Some(450));
    assert!(busy.is_transient(), "the recipient's 450 is temporary");
    assert_eq!(busy.context(), Context::Rcpt);
    let gone = outcome(b"550 5.1.1 no such user\r\n");
    assert_eq!(gone.decisive_reply().map(|r| r.code()), Some(550));
    assert!(!gone.is_transient());
}

/// The final `.` went out and the connection ended before its reply: the
/// message may have been delivered (a resend could duplicate it). Once the
/// reply is in, it is confirmed either way.
#[test]
fn a_message_without_its_final_reply_is_unconfirmed() {
    let check = |want: bool| {
        move |c: &mut Client, _: std::time::Instant| {
            assert_eq!(c.message_unconfirmed(), want);
        }
    };
    run_all(
        &plain(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS),
            Act(&send),
            C(GROUP),
            S(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n"),
            Act(&check(false)),
            Act(&body),
            C(BODY),
            Act(&check(true)),
            Eof,
            Act(&check(true)),
        ],
    );
    run_all(
        &plain(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS),
            Act(&send),
            C(GROUP),
            S(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n"),
            Act(&body),
            C(BODY),
            S(b"250 2.0.0 queued\r\n"),
            Act(&check(false)),
        ],
    );
}
