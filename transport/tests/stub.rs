//! The stub transport for applications' own tests.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::task::{Context, Poll, Waker};

use postern_transport::smtp::BodyType;
use postern_transport::{Envelope, Error, Mailbox, StubTransport};

fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn env() -> Envelope {
    Envelope::new(
        Mailbox::parse("a@example.com").unwrap(),
        [
            Mailbox::parse("b@example.com").unwrap(),
            Mailbox::parse("c@example.com").unwrap(),
        ],
    )
}

#[test]
fn records_what_would_go_on_the_wire() {
    let stub = StubTransport::new();
    let report = block_on(stub.send(&env(), "Subject: hi\n\n.dot\nend")).unwrap();
    assert!(report.all_accepted());
    let sent = stub.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message, b"Subject: hi\n\n.dot\nend");
    assert_eq!(sent[0].wire, b"Subject: hi\r\n\r\n..dot\r\nend\r\n.\r\n");
    assert_eq!(sent[0].envelope.body, BodyType::SevenBit);

    // 8-bit content is declared, as the real transport declares it.
    block_on(stub.send(&env(), "Subject: caf\u{e9}\r\n\r\nx\r\n")).unwrap();
    let last = stub.sent().pop().unwrap();
    assert_eq!(last.envelope.body, BodyType::EightBitMime);
    assert!(last.envelope.smtputf8);
}

#[test]
fn refuses_when_told_and_checks_the_message() {
    let stub = StubTransport::new();
    stub.refuse("451 4.3.0 try again later");
    let err = block_on(stub.send(&env(), "Subject: hi\r\n\r\nx\r\n")).unwrap_err();
    let Error::Rejected(report) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(report.rejected().count(), 2);
    assert!(err.is_transient());
    stub.refuse("550 5.1.1 no such user");
    assert!(
        !block_on(stub.send(&env(), "x\r\n"))
            .unwrap_err()
            .is_transient()
    );
    stub.accept();
    block_on(stub.send(&env(), "x\r\n")).unwrap();
    assert_eq!(stub.sent().len(), 1, "refused messages are not recorded");

    // A line over 998 octets cannot be sent, as with a real server.
    let long = format!("Subject: x\r\n\r\n{}\r\n", "y".repeat(1200));
    let err = block_on(stub.send(&env(), long)).unwrap_err();
    assert!(!err.is_transient(), "{err}");
}
