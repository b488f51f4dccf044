//! Building a message from parts (feature `mail-builder`).
#![cfg(feature = "mail-builder")]

use postern_transport::{Email, Mailbox};

#[allow(clippy::unwrap_used)]
fn m(s: &str) -> Mailbox {
    Mailbox::parse(s).unwrap()
}

#[test]
fn envelope_and_headers() {
    let (envelope, message) = Email::new(m("noreply@example.com"))
        .from_name("Billing Team")
        .to_named("Ann", m("ann@example.com"))
        .cc(m("cc@example.com"))
        .bcc(m("audit@example.com"))
        .reply_to_named("Support", m("support@example.com"))
        .return_path(m("bounces@example.com"))
        .subject("Invoice 42")
        .text("Amount due: 10 EUR.\n.\nA line with only a dot above.")
        .header("X-Mailer", "postern")
        .build()
        .unwrap();
    assert_eq!(envelope.from.to_string(), "<bounces@example.com>");
    let rcpts: Vec<String> = envelope
        .recipients
        .iter()
        .map(|r| r.mailbox.to_string())
        .collect();
    assert_eq!(
        rcpts,
        ["ann@example.com", "cc@example.com", "audit@example.com"]
    );
    let text = String::from_utf8(message.as_bytes().unwrap().to_vec()).unwrap();
    let head = &text[..text.find("\r\n\r\n").unwrap()];
    assert!(
        head.contains("From: \"Billing Team\" <noreply@example.com>\r\n"),
        "{head}"
    );
    assert!(
        head.contains("Reply-To: \"Support\" <support@example.com>\r\n"),
        "{head}"
    );
    assert!(head.contains("To: \"Ann\" <ann@example.com>\r\n"), "{head}");
    assert!(head.contains("Subject: Invoice 42\r\n"), "{head}");
    assert!(head.contains("X-Mailer: postern\r\n"), "{head}");
    assert!(
        head.contains("Message-ID: <") && head.contains("Date: "),
        "{head}"
    );
    assert!(
        !text.contains("audit@"),
        "Bcc must not be in the message: {text}"
    );
}

#[test]
fn refuses_bad_input() {
    let no_rcpt = Email::new(m("a@example.com")).subject("x").build();
    assert!(no_rcpt.unwrap_err().to_string().contains("no recipient"));
    let injected = Email::new(m("a@example.com"))
        .to(m("b@example.com"))
        .header("X-Evil", "a\r\nBcc: victim@example.com")
        .build();
    assert!(injected.unwrap_err().to_string().contains("line break"));
    let bad_name = Email::new(m("a@example.com"))
        .to(m("b@example.com"))
        .header("Bad Name", "x")
        .build();
    assert!(bad_name.is_err());
}

/// Display names go out as RFC 2047 encoded words, so a message whose
/// addresses are ASCII stays 7-bit in its headers whatever the names; only
/// a non-ASCII address itself needs SMTPUTF8.
#[test]
#[allow(clippy::unwrap_used)]
fn international_names_and_addresses() {
    use postern_transport::smtp::ContentNeeds;
    let (envelope, message) = Email::new(m("noreply@example.com"))
        .from_name("J\u{f6}ran Bj\u{f6}rk")
        .to_named("\u{c5}sa", m("asa@example.com"))
        .subject("R\u{e4}kning")
        .text("Hej! \u{c5}\u{e4}\u{f6}\n")
        .build()
        .unwrap();
    let bytes = message.as_bytes().unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let head = &text[..text.find("\r\n\r\n").unwrap()];
    assert!(head.is_ascii(), "{head}");
    assert!(head.contains("=?utf-8?"), "{head}");
    assert!(!envelope.needs_smtputf8());
    let needs = ContentNeeds::of(bytes);
    assert!(!needs.utf8_headers, "{needs:?}");

    let (envelope, message) = Email::new(m("noreply@example.com"))
        .to(m("j\u{f6}ran@example.com"))
        .subject("hi")
        .text("hello\n")
        .build()
        .unwrap();
    assert!(envelope.needs_smtputf8());
    let needs = ContentNeeds::of(message.as_bytes().unwrap());
    assert!(needs.utf8_headers, "the address is written in To: as UTF-8");
}

/// Display names from text, and one shape for every recipient kind.
#[test]
#[allow(clippy::unwrap_used)]
fn named_mailboxes_and_consistent_builders() {
    use postern_transport::NamedMailbox;
    let from = NamedMailbox::parse("\"Billing, Inc.\" <billing@example.com>").unwrap();
    let (envelope, message) = Email::new(from)
        .to(NamedMailbox::parse("Jane Doe <jane@example.com>").unwrap())
        .cc_named("Ops", m("ops@example.com"))
        .bcc_named("Audit", m("audit@example.com"))
        .reply_to(NamedMailbox::parse("Help <help@example.com>").unwrap())
        .subject("s")
        .text("t")
        .build()
        .unwrap();
    let rcpts: Vec<String> = envelope
        .recipients
        .iter()
        .map(|r| r.mailbox.to_string())
        .collect();
    assert_eq!(
        rcpts,
        ["jane@example.com", "ops@example.com", "audit@example.com"]
    );
    let text = String::from_utf8(message.as_bytes().unwrap().to_vec()).unwrap();
    let head = &text[..text.find("\r\n\r\n").unwrap()];
    assert!(
        head.contains("From: \"Billing, Inc.\" <billing@example.com>"),
        "{head}"
    );
    assert!(
        head.contains("To: \"Jane Doe\" <jane@example.com>"),
        "{head}"
    );
    assert!(head.contains("Cc: \"Ops\" <ops@example.com>"), "{head}");
    assert!(
        head.contains("Reply-To: \"Help\" <help@example.com>"),
        "{head}"
    );
    assert!(!head.contains("audit"), "{head}");
}
