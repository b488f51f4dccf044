//! DKIM signing (feature `dkim`): signatures made by postern verify with
//! mail-auth's verifier, on the signed bytes and on what a server received
//! after canonicalization and dot-stuffing on the wire.
#![cfg(feature = "dkim")]
#![allow(clippy::unwrap_used)]

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mail_auth::common::parse::TxtRecordParser as _;
use mail_auth::common::verify::DomainKey;
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};
use postern_test_support::{SmtpServer, SmtpServerConfig};
use postern_tokio::{
    Dkim, DkimError, Envelope, Error, Mailbox, Security, Transport, message_from_reader,
};

const RSA_PKCS8: &str = include_str!("data/test-only-dkim-rsa.pem");
const RSA_PKCS1: &str = include_str!("data/test-only-dkim-rsa-pkcs1.pem");
const ED25519: &str = include_str!("data/test-only-dkim-ed25519.pem");

/// Dot-stuffing (lines of "." and "..."), trailing white space, runs of
/// spaces (relaxed canonicalization), a bare CR, bare LFs, a folded header,
/// no line end at the end: every byte the wire rewrites.
const TRICKY: &[u8] = b"From: \"Ann Example\" <sender@example.com>\n\
To: rcpt@example.com\n\
Subject:   spaced    out \n\x20and folded\n\
\n\
.\n\
...three dots\n\
trailing spaces   \t\n\
bare\rCR\n\
\n\
\n\
caf\xc3\xa9 last line";

struct TxtCache(Mutex<HashMap<Box<str>, Txt>>);

impl ResolverCache<Box<str>, Txt> for TxtCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }
    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }
    fn insert(&self, key: Box<str>, value: Txt, _: Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

/// mail-auth's verdicts on `message`, with `dkim`'s published record as the
/// only DNS answer (the cache is consulted first; no query goes out).
async fn verify(dkim: &Dkim, message: &[u8]) -> Vec<DkimResult> {
    let cache = TxtCache(Mutex::new(HashMap::new()));
    let key = DomainKey::parse(dkim.dns_record().as_bytes()).unwrap();
    cache.insert(
        format!("{}.", dkim.dns_name()).into_boxed_str(),
        Txt::from(key),
        Instant::now() + Duration::from_secs(3600),
    );
    let authenticator = MessageAuthenticator::new_cloudflare().unwrap();
    let parsed = AuthenticatedMessage::parse(message).unwrap();
    let params = Parameters::new(&parsed).with_txt_cache(&cache);
    authenticator
        .verify_dkim(params)
        .await
        .iter()
        .map(|o| o.result().clone())
        .collect()
}

/// (selector, key, algorithm) for each kind of key.
const KEYS: [(&str, &str, &str); 3] = [
    ("rsa8", RSA_PKCS8, "rsa-sha256"),
    ("rsa1", RSA_PKCS1, "rsa-sha256"),
    ("ed", ED25519, "ed25519-sha256"),
];

fn dkim(selector: &str, pem: &str) -> Dkim {
    Dkim::from_pem("example.com", selector, pem).unwrap()
}

#[tokio::test]
async fn signatures_verify_and_tampering_fails() {
    for (selector, pem, algorithm) in KEYS {
        let dkim = dkim(selector, pem);
        assert_eq!(dkim.algorithm(), algorithm);
        let signed = dkim.sign(TRICKY).unwrap();
        let head = String::from_utf8_lossy(&signed[..200]).into_owned();
        assert!(
            head.starts_with(&format!("DKIM-Signature: v=1; a={algorithm}; ")),
            "{head}"
        );
        assert!(head.contains("d=example.com"), "{head}");
        assert_eq!(
            verify(&dkim, &signed).await,
            [DkimResult::Pass],
            "{algorithm}"
        );

        // One byte of the body changed: the body hash no longer matches.
        let mut tampered = signed.clone();
        let at = tampered.windows(5).position(|w| w == b"three").unwrap();
        tampered[at] = b'T';
        let verdict = verify(&dkim, &tampered).await;
        assert!(
            matches!(verdict[..], [DkimResult::Neutral(_) | DkimResult::Fail(_)]),
            "{verdict:?}"
        );

        // A signed header changed.
        let text = String::from_utf8(signed.clone())
            .unwrap()
            .replace("To: rcpt@", "To: evil@");
        let verdict = verify(&dkim, text.as_bytes()).await;
        assert!(matches!(verdict[..], [DkimResult::Fail(_)]), "{verdict:?}");
    }
}

/// A reader that hands out `piece` bytes at a time.
struct Pieces<'a> {
    rest: &'a [u8],
    piece: usize,
}

impl std::io::Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.piece.min(buf.len()).min(self.rest.len());
        buf[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        Ok(n)
    }
}

#[tokio::test]
async fn streamed_signature_matches_the_bytes_sent() {
    for (selector, pem, _) in KEYS {
        let dkim = dkim(selector, pem);
        // Any piece sizes: a CR at a piece boundary must wait for its LF,
        // the blank line may be cut anywhere.
        for piece in [1, 2, 7, 100, 64 * 1024] {
            let header = dkim
                .sign_read(Pieces {
                    rest: TRICKY,
                    piece,
                })
                .unwrap();
            let mut signed = header;
            signed.extend_from_slice(&postern_tokio::smtp::body::canonical(TRICKY));
            let verdict = verify(&dkim, &signed).await;
            assert_eq!(verdict, [DkimResult::Pass], "{selector}, pieces of {piece}");
        }
    }
}

#[test]
fn bad_keys_and_names_are_typed_errors() {
    let e = Dkim::from_pem("example.com", "s", "not a key").unwrap_err();
    assert!(matches!(e, DkimError::Key(_)), "{e:?}");
    let ec = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBv2\n-----END EC PRIVATE KEY-----\n";
    assert!(matches!(
        Dkim::from_pem("example.com", "s", ec),
        Err(DkimError::Key(_))
    ));
    let e = Dkim::from_pem("exa mple.com", "s", ED25519).unwrap_err();
    assert!(matches!(e, DkimError::Name(_)), "{e:?}");
    assert!(matches!(
        Dkim::from_pem("example.com", "", ED25519),
        Err(DkimError::Name(_))
    ));

    // The key never shows in Debug.
    let dkim = Dkim::from_pem("example.com", "s", RSA_PKCS8).unwrap();
    let debug = format!("{dkim:?}");
    assert!(
        debug.contains("rsa-sha256") && !debug.contains("inner"),
        "{debug}"
    );
    let secret_line = RSA_PKCS8.lines().nth(1).unwrap();
    assert!(!debug.contains(secret_line));

    // A header line that is not a field: verifiers would disagree on
    // where the body starts.
    let e = dkim
        .sign(b"From: a@example.com\nnot a field\n\nbody\n")
        .unwrap_err();
    assert_eq!(e, DkimError::MalformedHeader { line: 2 });
    let e = dkim
        .sign_read(&b" folded first\nFrom: a@example.com\n\n"[..])
        .unwrap_err();
    assert_eq!(e, DkimError::MalformedHeader { line: 1 });

    // No From.
    let e = dkim.sign(b"Subject: this\n\nbody\n").unwrap_err();
    assert_eq!(e, DkimError::NoFrom);
    let e = dkim.sign_read(&b"Subject: this\n\nbody\n"[..]).unwrap_err();
    assert_eq!(e, DkimError::NoFrom);

    // An endless header section is refused at the bound, not buffered.
    let line = [b"X-Pad: ".as_slice(), &[b'a'; 1000], b"\n"].concat();
    let endless = std::io::Read::take(Cycle(line), 1 << 30);
    assert_eq!(
        dkim.sign_read(endless).unwrap_err(),
        DkimError::HeaderTooLarge
    );

    // The published record is what a DNS zone takes.
    let ed = Dkim::from_pem("example.com", "ed", ED25519).unwrap();
    assert_eq!(ed.dns_name(), "ed._domainkey.example.com");
    assert!(ed.dns_record().starts_with("v=DKIM1; k=ed25519; p="));
    assert!(dkim.dns_record().starts_with("v=DKIM1; k=rsa; p=MIIBIjAN"));
}

/// Repeats its bytes forever.
struct Cycle(Vec<u8>);

impl std::io::Read for Cycle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0.rotate_left(n);
        Ok(n)
    }
}

/// Only the fields present are signed: a relay adding `Date` or
/// `Message-ID` (as Postfix does for local clients) leaves it valid.
#[tokio::test]
async fn absent_fields_are_not_signed() {
    let dkim = dkim("ed", ED25519);
    let signed = dkim
        .sign(b"From: a@example.com\nSubject: s\n\nbody\n")
        .unwrap();
    let text = String::from_utf8(signed).unwrap();
    let h = text.split("h=").nth(1).unwrap().split(';').next().unwrap();
    let mut signed: Vec<&str> = h.split(':').collect();
    signed.sort_unstable();
    assert_eq!(signed, ["From", "Subject"], "{text}");
    let relayed = text.replacen(
        "From: a@",
        "Date: Wed, 2 Dec 2026 08:00:00 +0000\r\nMessage-ID: <x@relay>\r\nFrom: a@",
        1,
    );
    assert_eq!(verify(&dkim, relayed.as_bytes()).await, [DkimResult::Pass]);
}

fn envelope() -> Envelope {
    Envelope::new(
        Mailbox::parse("sender@example.com").unwrap(),
        [Mailbox::parse("rcpt@example.com").unwrap()],
    )
}

/// Through a real SMTP dialogue: the transport signs, the wire dot-stuffs,
/// the server un-stuffs; what it stored verifies. With CHUNKING (BDAT, no
/// dot-stuffing) too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_on_the_way_and_verified_where_received() {
    for chunking in [false, true] {
        let server = SmtpServer::start(SmtpServerConfig {
            chunking,
            ..Default::default()
        })
        .unwrap();
        for (selector, pem, _) in KEYS {
            let t = Transport::builder("127.0.0.1")
                .port(server.port())
                .security(Security::Plaintext)
                .dkim(dkim(selector, pem))
                .build()
                .unwrap();
            t.send(&envelope(), TRICKY).await.unwrap();
            let got = server.messages().pop().unwrap().data.unwrap();
            assert!(got.starts_with(b"DKIM-Signature: "));
            let verdict = verify(&dkim(selector, pem), &got).await;
            assert_eq!(
                verdict,
                [DkimResult::Pass],
                "chunking {chunking}, {selector}"
            );
            t.shutdown().await;
        }
    }
}

/// A streamed message: refused unsigned, sent as is after the first pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_messages_take_two_passes() {
    let server = SmtpServer::start(SmtpServerConfig::default()).unwrap();
    let dkim = Dkim::from_pem("example.com", "ed", ED25519).unwrap();
    let t = Transport::builder("127.0.0.1")
        .port(server.port())
        .security(Security::Plaintext)
        .dkim(Dkim::from_pem("example.com", "ed", ED25519).unwrap())
        .build()
        .unwrap();
    let mut envelope = envelope();
    envelope.body = postern_tokio::BodyType::EightBitMime;
    let e = t
        .send(&envelope, message_from_reader(std::io::Cursor::new(TRICKY)))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Dkim(DkimError::Streamed)), "{e:?}");
    assert!(!e.is_transient());
    assert!(e.to_string().contains("Message::prepend"), "{e}");
    assert_eq!(server.connections(), 0, "refused before connecting");

    let header = dkim.sign_read(std::io::Cursor::new(TRICKY)).unwrap();
    let message = message_from_reader(std::io::Cursor::new(TRICKY)).prepend(header);
    t.send(&envelope, message).await.unwrap();
    let got = server.messages().pop().unwrap().data.unwrap();
    assert_eq!(verify(&dkim, &got).await, [DkimResult::Pass]);
    t.shutdown().await;
}

/// The independent check: signed by postern (RSA and Ed25519), submitted to
/// the real Postfix, delivered by Dovecot LMTP to a Maildir, verified there
/// by Python's dkimpy with only the published records as DNS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_through_postfix_and_verified_by_dkimpy() {
    use postern_test_support::peers::{Peers, Server};
    let Some(p) = Peers::get() else { return };
    let tag = format!(
        "dkim-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let message = String::from_utf8(TRICKY.to_vec())
        .unwrap()
        .replace("Subject:   spaced", &format!("Subject: {tag}   spaced"));
    for (selector, pem, _) in KEYS {
        let t = p
            .builder::<postern_tokio::Tokio>(Server::Postfix, false, "localhost")
            .oauth2(p.oauth("basic-client", "basic-secret~1", true))
            .dkim(dkim(selector, pem))
            .build()
            .unwrap();
        let needle = format!("{tag} {selector}");
        let text = message.replace(&tag, &needle);
        t.send(&envelope(), text.as_str()).await.unwrap();
        t.shutdown().await;
        let stored = p.wait_for_mail("rcpt", &needle, 1);
        assert_eq!(stored.len(), 1, "{selector}: not delivered");

        let dir = std::env::temp_dir().join(&tag);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{selector}.eml"));
        std::fs::write(&file, &stored[0]).unwrap();
        let signer = dkim(selector, pem);
        let run = |record: &str| {
            std::process::Command::new(p.var("DKIM_PYTHON"))
                .arg(p.var("DKIM_VERIFY"))
                .arg(&file)
                .arg(signer.dns_name())
                .arg(record)
                .output()
                .unwrap()
        };
        let out = run(signer.dns_record());
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{selector}: dkimpy says {said}\n{}",
            stored[0]
        );
        assert!(said.contains("signature 0: pass"), "{said}");

        // The check can fail: another key's record does not verify.
        let other = if selector == "ed" {
            dkim("ed", RSA_PKCS8)
        } else {
            dkim(selector, ED25519)
        };
        assert!(
            !run(other.dns_record()).status.success(),
            "{selector}: wrong key accepted"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
