//! Pipelining across transactions (RFC 2920 §3.1): the next MAIL, RCPT and
//! DATA follow a message's final `.` before its reply. Every script runs
//! whole, split at every position and one byte at a time.
#![allow(clippy::unwrap_used)]

mod support;

use postern_smtp::{Client, ClientConfig, CommandError, Envelope, Error, Event, Mailbox, Security};
use support::{Step::*, errors, events, run_all};

fn config() -> ClientConfig {
    ClientConfig::default()
        .tls(Security::Plaintext)
        .pipeline_transactions(true)
}

fn env(to: &str) -> Envelope {
    Envelope::new(
        Mailbox::parse("sender@example.com").unwrap(),
        [Mailbox::parse(to).unwrap()],
    )
}

const GREETING: &[u8] = b"220 mx.example.com ESMTP\r\n";
const EHLO: &[u8] = b"EHLO [127.0.0.1]\r\n";
const CAPS: &[u8] = b"250-mx.example.com\r\n250-PIPELINING\r\n250 8BITMIME\r\n";

fn send(to: &'static str) -> impl Fn(&mut Client, std::time::Instant) {
    move |c, now| {
        c.send_envelope(now, &env(to)).unwrap();
    }
}

fn body(data: &'static [u8]) -> impl Fn(&mut Client, std::time::Instant) {
    move |c, now| {
        assert_eq!(c.write_body(now, data).unwrap(), data.len());
        c.finish_body(now).unwrap();
    }
}

/// The message body, then at once the next envelope: one write carries the
/// `.` and the next MAIL, RCPT and DATA.
fn body_then_send(
    data: &'static [u8],
    to: &'static str,
) -> impl Fn(&mut Client, std::time::Instant) {
    move |c, now| {
        body(data)(c, now);
        c.send_envelope(now, &env(to)).unwrap();
    }
}

fn outcomes(ev: &[Event]) -> Vec<(u64, bool, u16)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Delivered(r) => Some((r.id.0, true, r.message.as_ref()?.code())),
            Event::TransactionFailed(r) => Some((r.id.0, false, r.message.as_ref()?.code())),
            _ => None,
        })
        .collect()
}

#[test]
fn three_messages_in_two_round_trips_each_reply_to_its_message() {
    let log = run_all(
        &config(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS),
            Act(&send("a@example.org")),
            C(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n"),
            S(b"250 ok\r\n250 ok\r\n354 go\r\n"),
            Act(&body_then_send(b"first\r\n", "b@example.org")),
            C(b"first\r\n.\r\nMAIL FROM:<sender@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"),
            // The first message's reply, then the second's envelope replies.
            S(b"250 2.0.0 queued 1\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
            Act(&body_then_send(b"second\r\n", "c@example.org")),
            C(b"second\r\n.\r\nMAIL FROM:<sender@example.com>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n"),
            S(b"250 2.0.0 queued 2\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
            Act(&body(b"third\r\n")),
            C(b"third\r\n.\r\n"),
            S(b"250 2.0.0 queued 3\r\n"),
        ],
    );
    let ev = events(&log);
    assert_eq!(
        outcomes(&ev),
        [(0, true, 250), (1, true, 250), (2, true, 250)]
    );
    // The replies went to the right reports.
    let texts: Vec<String> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Delivered(r) => Some(r.message.as_ref()?.printable()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["queued 1", "queued 2", "queued 3"]);
    assert!(errors(&log).is_empty());
}

/// The middle message is refused at its end: the messages around it keep
/// their own verdicts, and no RSET is needed between them.
#[test]
fn a_refused_message_does_not_change_the_next_verdict() {
    let log = run_all(
        &config(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS),
            Act(&send("a@example.org")),
            C(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n"),
            S(b"250 ok\r\n250 ok\r\n354 go\r\n"),
            Act(&body_then_send(b"spam\r\n", "b@example.org")),
            C(b"spam\r\n.\r\nMAIL FROM:<sender@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"),
            S(b"554 5.7.1 rejected as spam\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
            Act(&body(b"ham\r\n")),
            C(b"ham\r\n.\r\n"),
            S(b"250 2.0.0 queued\r\n"),
        ],
    );
    let ev = events(&log);
    assert_eq!(outcomes(&ev), [(0, false, 554), (1, true, 250)]);
}

/// The next envelope is refused while the previous message's reply is still
/// due: that message is delivered, the next one fails, and the machine is
/// ready after the RSET.
#[test]
fn a_refused_next_envelope_leaves_the_previous_message_alone() {
    let log = run_all(
        &config(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS),
            Act(&send("a@example.org")),
            C(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n"),
            S(b"250 ok\r\n250 ok\r\n354 go\r\n"),
            Act(&body_then_send(b"one\r\n", "nobody@example.org")),
            C(b"one\r\n.\r\nMAIL FROM:<sender@example.com>\r\nRCPT TO:<nobody@example.org>\r\nDATA\r\n"),
            // Two reads, so that every run logs the delivery before the RSET.
            S(b"250 2.0.0 queued\r\n"),
            S(b"250 ok\r\n550 5.1.1 no such user\r\n554 5.5.1 no valid recipients\r\n"),
            C(b"RSET\r\n"),
            S(b"250 2.0.0 ok\r\n"),
        ],
    );
    let ev = events(&log);
    let delivered: Vec<u64> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Delivered(r) => Some(r.id.0),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, [0]);
    let Some(Event::TransactionFailed(r)) = ev.last() else {
        panic!("{ev:?}")
    };
    assert_eq!(r.id.0, 1);
    assert_eq!(r.recipients[0].reply.as_ref().unwrap().code(), 550);
}

/// The connection ends after the first of two outstanding final replies...
/// the first message is delivered; the second's `.` never went out. And
/// when it ends before any of them, the message whose `.` went out is the
/// one that may have been delivered.
#[test]
fn eof_after_k_of_n_final_replies() {
    let unconfirmed = std::cell::RefCell::new(Vec::new());
    let record = |c: &mut Client, _now| {
        *unconfirmed.borrow_mut() = c.unconfirmed_transactions().map(|t| t.0).collect();
    };
    let log = run_all(
        &config(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS),
            Act(&send("a@example.org")),
            C(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n"),
            S(b"250 ok\r\n250 ok\r\n354 go\r\n"),
            Act(&body_then_send(b"one\r\n", "b@example.org")),
            C(b"one\r\n.\r\nMAIL FROM:<sender@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"),
            S(b"250 2.0.0 queued\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
            Act(&body(b"two\r\n")),
            C(b"two\r\n.\r\n"),
            Eof,
            Act(&record),
        ],
    );
    let ev = events(&log);
    assert_eq!(outcomes(&ev), [(0, true, 250)]);
    assert!(matches!(ev.last(), Some(Event::Closed { error: Some(_) })));
    assert_eq!(
        *unconfirmed.borrow(),
        [1],
        "the second message may have been delivered"
    );

    // Before any final reply: only the first message's `.` went out.
    let log = run_all(
        &config(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS),
            Act(&send("a@example.org")),
            C(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n"),
            S(b"250 ok\r\n250 ok\r\n354 go\r\n"),
            Act(&body_then_send(b"one\r\n", "b@example.org")),
            C(b"one\r\n.\r\nMAIL FROM:<sender@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"),
            Eof,
            Act(&record),
        ],
    );
    assert!(outcomes(&events(&log)).is_empty());
    assert_eq!(*unconfirmed.borrow(), [0]);
}

/// Off by default, never without PIPELINING, never while an earlier BDAT
/// chunk's reply is outstanding.
#[test]
fn only_when_enabled_and_offered() {
    let refused = std::cell::Cell::new(false);
    let first = send("a@example.org");
    let try_next = |c: &mut Client, now| {
        body(b"one\r\n")(c, now);
        let r = c.send_envelope(now, &env("b@example.org"));
        refused.set(matches!(r, Err(CommandError::NotReady { .. })));
    };
    for (config, caps) in [
        (ClientConfig::default().tls(Security::Plaintext), CAPS),
        (
            config(),
            b"250-mx.example.com\r\n250 8BITMIME\r\n".as_slice(),
        ),
    ] {
        let pipelined = caps.windows(10).any(|w| w == b"PIPELINING");
        let chunking = caps.windows(8).any(|w| w == b"CHUNKING");
        let mut script = vec![S(GREETING), C(EHLO), S(caps), Act(&first)];
        match (pipelined, chunking) {
            (true, false) => {
                script.push(C(
                    b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n",
                ));
                script.push(S(b"250 ok\r\n250 ok\r\n354 go\r\n"));
                script.push(Act(&try_next));
                script.push(C(b"one\r\n.\r\n"));
            }
            (true, true) => {
                script.push(C(
                    b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.org>\r\n",
                ));
                script.push(S(b"250 ok\r\n250 ok\r\n"));
                script.push(Act(&try_next));
                script.push(C(b"BDAT 5\r\none\r\nBDAT 0 LAST\r\n"));
            }
            _ => {
                script.push(C(b"MAIL FROM:<sender@example.com>\r\n"));
                script.push(S(b"250 ok\r\n"));
                script.push(C(b"RCPT TO:<a@example.org>\r\n"));
                script.push(S(b"250 ok\r\n"));
                script.push(C(b"DATA\r\n"));
                script.push(S(b"354 go\r\n"));
                script.push(Act(&try_next));
                script.push(C(b"one\r\n.\r\n"));
            }
        }
        run_all(&config, &script);
        assert!(refused.get(), "{caps:?}");
    }
}

/// A timeout while an overtaken message's reply is due is the end-of-data
/// timeout (RFC 5321 §4.5.3.2.6: 10 minutes), not the MAIL one.
#[test]
fn the_oldest_reply_sets_the_deadline() {
    let log = run_all(
        &config(),
        &[
            S(GREETING),
            C(EHLO),
            S(CAPS),
            Act(&send("a@example.org")),
            C(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n"),
            S(b"250 ok\r\n250 ok\r\n354 go\r\n"),
            Act(&body_then_send(b"one\r\n", "b@example.org")),
            C(b"one\r\n.\r\nMAIL FROM:<sender@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"),
            Wait(std::time::Duration::from_secs(301)),
            Wait(std::time::Duration::from_secs(300)),
        ],
    );
    let errs = errors(&log);
    assert!(
        matches!(errs.first(), Some(Error::Timeout { phase, .. }) if *phase == postern_smtp::Phase::DataEnd),
        "{errs:?}"
    );
}

/// Where CHUNKING is offered, messages still go with DATA while pipelining
/// across transactions is on (BDAT is never overtaken); a binary body needs
/// BDAT, and the next message then waits for its reply.
#[test]
fn data_rather_than_bdat_and_never_past_bdat() {
    const CHUNKING: &[u8] =
        b"250-mx.example.com\r\n250-PIPELINING\r\n250-BINARYMIME\r\n250 CHUNKING\r\n";
    let log = run_all(
        &config(),
        &[
            S(GREETING),
            C(EHLO),
            S(CHUNKING),
            Act(&send("a@example.org")),
            C(b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n"),
            S(b"250 ok\r\n250 ok\r\n354 go\r\n"),
            Act(&body_then_send(b"one\r\n", "b@example.org")),
            C(b"one\r\n.\r\nMAIL FROM:<sender@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"),
            S(b"250 2.0.0 queued 1\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
            Act(&body(b"two\r\n")),
            C(b"two\r\n.\r\n"),
            S(b"250 2.0.0 queued 2\r\n"),
        ],
    );
    assert_eq!(outcomes(&events(&log)), [(0, true, 250), (1, true, 250)]);

    let refused = std::cell::Cell::new(false);
    let binary = |c: &mut Client, now| {
        let mut e = env("a@example.org");
        e.body = postern_smtp::BodyType::BinaryMime;
        c.send_envelope(now, &e).unwrap();
    };
    let then_next = |c: &mut Client, now| {
        body(b"one\r\n")(c, now);
        let r = c.send_envelope(now, &env("b@example.org"));
        refused.set(matches!(r, Err(CommandError::NotReady { .. })));
    };
    run_all(
        &config(),
        &[
            S(GREETING),
            C(EHLO),
            S(CHUNKING),
            Act(&binary),
            C(b"MAIL FROM:<sender@example.com> BODY=BINARYMIME\r\nRCPT TO:<a@example.org>\r\n"),
            S(b"250 ok\r\n250 ok\r\n"),
            Act(&then_next),
            C(b"BDAT 5 LAST\r\none\r\n"),
            S(b"250 2.0.0 queued\r\n"),
        ],
    );
    assert!(refused.get(), "never past a BDAT message");
}
