//! Transactions whose recipients come one at a time
//! (`Client::open_transaction`), as a relay uses them: each MAIL and RCPT
//! reply is reported as it arrives, and the body waits for
//! `close_envelope`. Every script runs whole, split at every position and
//! one byte at a time.
#![allow(clippy::unwrap_used)]

mod support;

use postern_smtp::{
    Client, ClientConfig, CommandError, Envelope, Event, Mailbox, Recipient, Security,
};
use support::{Step::*, events, run_all};

fn config() -> ClientConfig {
    ClientConfig::default().tls(Security::Plaintext)
}

const GREETING: &[u8] = b"220 mx.example.com ESMTP\r\n";
const EHLO: &[u8] = b"EHLO [127.0.0.1]\r\n";
const PIPELINED: &[u8] = b"250-mx.example.com\r\n250-PIPELINING\r\n250 8BITMIME\r\n";
const PLAIN: &[u8] = b"250-mx.example.com\r\n250 8BITMIME\r\n";
const CHUNKING: &[u8] = b"250-mx.example.com\r\n250-PIPELINING\r\n250 CHUNKING\r\n";

fn open(c: &mut Client, now: std::time::Instant) {
    let mut envelope = Envelope::new(
        Mailbox::parse("app@example.com").unwrap(),
        [Mailbox::parse("x@example.com").unwrap()],
    );
    envelope.recipients.clear();
    c.open_transaction(now, &envelope).unwrap();
}

fn rcpt(to: &'static str) -> impl Fn(&mut Client, std::time::Instant) {
    move |c, now| {
        c.add_recipient(now, Recipient::from(Mailbox::parse(to).unwrap()))
            .unwrap();
    }
}

fn close(c: &mut Client, now: std::time::Instant) {
    c.close_envelope(now).unwrap();
}

fn abandon(c: &mut Client, now: std::time::Instant) {
    c.abandon_envelope(now).unwrap();
}

fn body(c: &mut Client, now: std::time::Instant) {
    c.write_body(now, b"hello\r\n").unwrap();
    c.finish_body(now).unwrap();
}

/// The envelope replies as (recipient index, code).
fn envelope_replies(ev: &[Event]) -> Vec<(Option<usize>, u16)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::EnvelopeReply {
                recipient, reply, ..
            } => Some((*recipient, reply.code())),
            _ => None,
        })
        .collect()
}

#[test]
fn pipelined_each_reply_as_it_comes_then_data_on_close() {
    let log = run_all(
        &config(),
        &[
            S(GREETING),
            C(EHLO),
            S(PIPELINED),
            Act(&open),
            C(b"MAIL FROM:<app@example.com>\r\n"),
            Act(&rcpt("a@example.org")),
            C(b"RCPT TO:<a@example.org>\r\n"),
            S(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n"),
            Act(&rcpt("b@example.org")),
            C(b"RCPT TO:<b@example.org>\r\n"),
            S(b"550 5.1.1 no such user\r\n"),
            Act(&close),
            C(b"DATA\r\n"),
            S(b"354 go\r\n"),
            Act(&body),
            C(b"hello\r\n.\r\n"),
            S(b"250 2.0.0 queued\r\n"),
        ],
    );
    let ev = events(&log);
    assert_eq!(
        envelope_replies(&ev),
        [(None, 250), (Some(0), 250), (Some(1), 550)]
    );
    match ev.last().unwrap() {
        Event::Delivered(report) => {
            assert_eq!(report.recipients.len(), 2);
            assert!(report.recipients[0].accepted());
            assert!(!report.recipients[1].accepted());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn without_pipelining_one_command_per_reply() {
    let log = run_all(
        &config(),
        &[
            S(GREETING),
            C(EHLO),
            S(PLAIN),
            Act(&open),
            // A recipient added before the MAIL reply waits for it.
            Act(&rcpt("a@example.org")),
            C(b"MAIL FROM:<app@example.com>\r\n"),
            S(b"250 ok\r\n"),
            C(b"RCPT TO:<a@example.org>\r\n"),
            // Closed while the RCPT reply is outstanding: DATA follows it.
            Act(&close),
            C(b""),
            S(b"250 ok\r\n"),
            C(b"DATA\r\n"),
            S(b"354 go\r\n"),
            Act(&body),
            C(b"hello\r\n.\r\n"),
            S(b"250 queued\r\n"),
        ],
    );
    let ev = events(&log);
    assert_eq!(envelope_replies(&ev), [(None, 250), (Some(0), 250)]);
    assert!(matches!(ev.last().unwrap(), Event::Delivered(_)));
}

#[test]
fn abandoned_or_refused_envelopes_end_with_rset() {
    let log = run_all(
        &config(),
        &[
            S(GREETING),
            C(EHLO),
            S(PIPELINED),
            Act(&open),
            Act(&rcpt("a@example.org")),
            C(b"MAIL FROM:<app@example.com>\r\nRCPT TO:<a@example.org>\r\n"),
            // Abandoned with both replies outstanding: RSET after them.
            Act(&abandon),
            C(b""),
            // (Two reads: the RSET goes out between the two events.)
            S(b"250 ok\r\n"),
            S(b"250 ok\r\n"),
            C(b"RSET\r\n"),
            S(b"250 reset\r\n"),
        ],
    );
    let ev = events(&log);
    assert_eq!(envelope_replies(&ev), [(None, 250), (Some(0), 250)]);
    assert!(matches!(ev.last().unwrap(), Event::TransactionFailed(_)));
    // Every recipient refused: close gives RSET, not DATA.
    let log = run_all(
        &config(),
        &[
            S(GREETING),
            C(EHLO),
            S(PIPELINED),
            Act(&open),
            Act(&rcpt("a@example.org")),
            C(b"MAIL FROM:<app@example.com>\r\nRCPT TO:<a@example.org>\r\n"),
            S(b"250 ok\r\n550 no\r\n"),
            Act(&close),
            C(b"RSET\r\n"),
            S(b"250 reset\r\n"),
        ],
    );
    assert!(matches!(
        events(&log).last().unwrap(),
        Event::TransactionFailed(_)
    ));
    // MAIL refused without pipelining: nothing more is sent until the
    // relay gives up.
    let log = run_all(
        &config(),
        &[
            S(GREETING),
            C(EHLO),
            S(PLAIN),
            Act(&open),
            C(b"MAIL FROM:<app@example.com>\r\n"),
            S(b"550 5.7.1 not yours\r\n"),
            Act(&abandon),
            C(b"RSET\r\n"),
            S(b"250 reset\r\n"),
        ],
    );
    let ev = events(&log);
    assert_eq!(envelope_replies(&ev), [(None, 550)]);
    assert!(matches!(ev.last().unwrap(), Event::TransactionFailed(_)));
}

#[test]
fn chunking_starts_the_body_on_close() {
    let log = run_all(
        &config().use_chunking(true),
        &[
            S(GREETING),
            C(EHLO),
            S(CHUNKING),
            Act(&open),
            Act(&rcpt("a@example.org")),
            C(b"MAIL FROM:<app@example.com>\r\nRCPT TO:<a@example.org>\r\n"),
            S(b"250 ok\r\n250 ok\r\n"),
            Act(&close),
            Act(&body),
            C(b"BDAT 7 LAST\r\nhello\r\n"),
            S(b"250 queued\r\n"),
        ],
    );
    assert!(matches!(events(&log).last().unwrap(), Event::Delivered(_)));
}

#[test]
fn misuse_is_refused() {
    run_all(
        &config(),
        &[
            S(GREETING),
            C(EHLO),
            S(PIPELINED),
            Act(&|c: &mut Client, now| {
                // Not open: no transaction at all.
                assert!(matches!(
                    c.add_recipient(
                        now,
                        Recipient::from(Mailbox::parse("a@example.org").unwrap())
                    ),
                    Err(CommandError::NotReady { .. })
                ));
                assert!(c.close_envelope(now).is_err());
                open(c, now);
                // SMTPUTF8 was not declared at MAIL time.
                assert!(matches!(
                    c.add_recipient(
                        now,
                        Recipient::from(Mailbox::parse("δ@example.org").unwrap())
                    ),
                    Err(CommandError::ExtensionRequired {
                        extension: "SMTPUTF8",
                        ..
                    })
                ));
                c.close_envelope(now).unwrap();
                // Closed: no more recipients.
                assert!(
                    c.add_recipient(
                        now,
                        Recipient::from(Mailbox::parse("b@example.org").unwrap())
                    )
                    .is_err()
                );
            }),
            C(b"MAIL FROM:<app@example.com>\r\n"),
            S(b"250 ok\r\n"),
            C(b"RSET\r\n"),
        ],
    );
}
