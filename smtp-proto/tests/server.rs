//! The server machine driven by byte scripts: each script runs whole, split
//! at every position and one byte at a time, and must give the same bytes
//! out and the same events. Virtual time for the timeouts; the client
//! machine back to back with the server for round trips.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use postern_smtp::{
    Client, ClientConfig, Envelope, Event, Mailbox, Question, Reply, Security, Server,
    ServerConfig, ServerError, ServerEvent, ServerMisuse, ServerSecurity,
};

/// What a run produced: the bytes sent and the events (content chunks
/// merged, since their boundaries follow the input's).
#[derive(Debug, PartialEq, Eq)]
struct Run {
    out: String,
    events: Vec<String>,
    body: Vec<u8>,
}

/// The application of these tests: password `secret`; senders other than
/// `bad@example.com`; recipients other than `nobody@...`; every message.
fn answer(server: &mut Server, now: Instant, event: &ServerEvent) {
    let reply = |code: u16, text: &str| Reply::new(code, &[text]).expect("valid reply");
    let result = match event {
        ServerEvent::Authenticate(auth) if auth.password.expose() == "secret" => server.accept(now),
        ServerEvent::Authenticate(_) => {
            server.answer(now, reply(535, "5.7.8 Authentication credentials invalid"))
        }
        ServerEvent::Mail(mail) if mail.from.to_string() == "<bad@example.com>" => {
            server.answer(now, reply(550, "5.7.1 Not your address"))
        }
        ServerEvent::Rcpt(to) if to.local_part() == "nobody" => {
            server.answer(now, reply(550, "5.1.1 No such user"))
        }
        ServerEvent::MessageEnd { size } => {
            server.answer(now, reply(250, &format!("2.0.0 Ok: queued, {size} octets")))
        }
        ServerEvent::Mail(_) | ServerEvent::Rcpt(_) | ServerEvent::Data { .. } => {
            server.accept(now)
        }
        ServerEvent::StartTls => {
            let out = server.poll_transmit().map(<[u8]>::len).unwrap_or(0);
            server.advance_transmit(out);
            server
                .handle_tls_established(now)
                .map_err(|_| ServerMisuse::NoTlsPending)
        }
        _ => Ok(()),
    };
    result.expect("the test application answers correctly");
}

fn drain(server: &mut Server, now: Instant, run: &mut Run) {
    loop {
        if let Some(bytes) = server.poll_transmit() {
            run.out.push_str(&String::from_utf8_lossy(bytes));
            let n = bytes.len();
            server.advance_transmit(n);
        }
        let Some(event) = server.poll_event() else {
            if server.poll_transmit().is_none() {
                return;
            }
            continue;
        };
        match &event {
            ServerEvent::BodyChunk(bytes) => run.body.extend_from_slice(bytes),
            other => {
                let shown = format!("{other:?}");
                if run
                    .events
                    .last()
                    .is_none_or(|last| *last != shown || !shown.starts_with("BodyChunk"))
                {
                    run.events.push(shown);
                }
            }
        }
        answer(server, now, &event);
    }
}

fn run_pieces(config: &ServerConfig, pieces: &[&[u8]], eof: bool) -> Run {
    let now = Instant::now();
    let mut server = Server::new(config.clone(), now);
    let mut run = Run {
        out: String::new(),
        events: Vec::new(),
        body: Vec::new(),
    };
    drain(&mut server, now, &mut run);
    for piece in pieces {
        let _ = server.handle_input(now, piece);
        drain(&mut server, now, &mut run);
    }
    if eof {
        let _ = server.handle_eof(now);
        drain(&mut server, now, &mut run);
    }
    // Content handed out before a refusal depends on where reads end; the
    // application drops it on `MessageRefused`.
    if run.events.iter().any(|e| e.starts_with("MessageRefused")) {
        run.body.clear();
    }
    run
}

/// Runs `script` whole, split at every position and byte by byte; all
/// must agree. Returns the run.
fn script(config: &ServerConfig, script: &[u8]) -> Run {
    let whole = run_pieces(config, &[script], false);
    for cut in 0..=script.len() {
        let (a, b) = script.split_at(cut);
        assert_eq!(run_pieces(config, &[a, b], false), whole, "split at {cut}");
    }
    let bytes: Vec<&[u8]> = script.chunks(1).collect();
    assert_eq!(run_pieces(config, &bytes, false), whole, "byte by byte");
    whole
}

fn plain(user: &str, password: &str) -> String {
    STANDARD.encode(format!("\0{user}\0{password}"))
}

fn loopback() -> ServerConfig {
    ServerConfig::default()
        .hostname("proxy.test".into())
        .plaintext_auth(true)
        .max_message_size(Some(10_000))
}

#[test]
fn a_whole_session_pipelined_or_not_gives_the_same_replies() {
    let auth = plain("app@example.com", "secret");
    let commands = format!(
        "EHLO client.test\r\nAUTH PLAIN {auth}\r\nMAIL FROM:<app@example.com> SIZE=60\r\n\
         RCPT TO:<a@example.com>\r\nRCPT TO:<nobody@example.com>\r\nDATA\r\n\
         Subject: hi\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n"
    );
    let run = script(&loopback(), commands.as_bytes());
    assert_eq!(
        run.out,
        "220 proxy.test ESMTP postern\r\n\
         250-proxy.test\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
         250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250 AUTH PLAIN LOGIN\r\n\
         235 2.7.0 Authentication successful\r\n\
         250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n550 5.1.1 No such user\r\n\
         354 End data with <CR><LF>.<CR><LF>\r\n\
         250 2.0.0 Ok: queued, 29 octets\r\n\
         221 2.0.0 proxy.test closing connection\r\n"
    );
    assert_eq!(run.body, b"Subject: hi\r\n\r\n.leading dot\r\n");
    assert!(
        run.events
            .iter()
            .any(|e| e.contains("username: \"app@example.com\""))
    );
    assert!(
        run.events.iter().all(|e| !e.contains("secret")),
        "the password is redacted in events: {:?}",
        run.events
    );
    assert_eq!(
        run.events.last().map(String::as_str),
        Some("Closed { error: None }")
    );
}

#[test]
fn auth_login_two_steps_cancel_and_failures() {
    let user = STANDARD.encode("app@example.com");
    let good = STANDARD.encode("secret");
    let bad = STANDARD.encode("wrong");
    let text = format!(
        "EHLO c\r\nAUTH LOGIN\r\n{user}\r\n*\r\nAUTH LOGIN {user}\r\n{bad}\r\n\
         AUTH LOGIN\r\n{user}\r\n{good}\r\nAUTH PLAIN\r\n"
    );
    let run = script(&loopback(), text.as_bytes());
    let replies: Vec<&str> = run.out.lines().filter(|l| !l.starts_with("250")).collect();
    assert_eq!(
        replies,
        [
            "220 proxy.test ESMTP postern",
            "334 VXNlcm5hbWU6",
            "334 UGFzc3dvcmQ6",
            "501 5.0.0 Authentication cancelled",
            "334 UGFzc3dvcmQ6",
            "535 5.7.8 Authentication credentials invalid",
            "334 VXNlcm5hbWU6",
            "334 UGFzc3dvcmQ6",
            "235 2.7.0 Authentication successful",
            "503 5.5.1 Already authenticated",
        ]
    );
    // Three failures close the session.
    let bad_plain = plain("app@example.com", "nope");
    let text = format!(
        "EHLO c\r\n{0}{0}{0}NOOP\r\n",
        format!("AUTH PLAIN {bad_plain}\r\n")
    );
    let run = script(&loopback(), text.as_bytes());
    assert!(run.out.ends_with(
        "535 5.7.8 Authentication credentials invalid\r\n\
         421 4.7.0 Too many failed authentications, closing\r\n"
    ));
    assert_eq!(
        run.events.last().map(String::as_str),
        Some("Closed { error: Some(TooManyAuthFailures) }")
    );
}

#[test]
fn sequence_and_policy_refusals() {
    let run = script(
        &loopback(),
        b"MAIL FROM:<a@example.com>\r\nEHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n\
          DATA\r\nVRFY x\r\nXYZZY\r\nMAIL FROM:<a@example.com> RET=HDRS\r\nRSET\r\nQUIT\r\n",
    );
    let replies: Vec<&str> = run.out.lines().filter(|l| !l.starts_with("250-")).collect();
    assert_eq!(
        replies,
        [
            "220 proxy.test ESMTP postern",
            "503 5.5.1 EHLO or HELO first",
            "250 AUTH PLAIN LOGIN",
            "530 5.7.0 Authentication required",
            "503 5.5.1 MAIL first",
            "503 5.5.1 MAIL first",
            "252 2.5.0 Cannot VRFY user, but will accept message",
            "500 5.5.2 Command not recognized",
            "555 5.5.4 Parameter not supported",
            "250 2.0.0 OK",
            "221 2.0.0 proxy.test closing connection",
        ]
    );
    // No accepted recipient: DATA is refused; a refused sender opens nothing.
    let auth = plain("u", "secret");
    let text = format!(
        "EHLO c\r\nAUTH PLAIN {auth}\r\nMAIL FROM:<bad@example.com>\r\nRCPT TO:<b@example.com>\r\n\
         MAIL FROM:<a@example.com>\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<nobody@example.com>\r\nDATA\r\n"
    );
    let run = script(&loopback(), text.as_bytes());
    assert!(run.out.ends_with(
        "550 5.7.1 Not your address\r\n503 5.5.1 MAIL first\r\n250 2.1.0 Sender OK\r\n\
         503 5.5.1 Nested MAIL command\r\n550 5.1.1 No such user\r\n554 5.5.1 No valid recipients\r\n"
    ));
}

#[test]
fn auth_is_not_offered_without_tls_unless_configured() {
    let config = ServerConfig::default();
    let auth = plain("u", "secret");
    let run = script(
        &config,
        format!("EHLO c\r\nAUTH PLAIN {auth}\r\n").as_bytes(),
    );
    assert!(!run.out.contains("AUTH PLAIN LOGIN"));
    assert!(
        run.out
            .ends_with("538 5.7.11 Encryption required for requested authentication mechanism\r\n")
    );
    // With STARTTLS offered: AUTH only after the handshake, and MAIL says so.
    let config = ServerConfig::default().security(ServerSecurity::StartTls);
    let run = script(
        &config,
        b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nSTARTTLS\r\n",
    );
    assert!(run.out.contains("250 STARTTLS\r\n"));
    assert!(
        run.out
            .contains("530 5.7.0 Must issue a STARTTLS command first\r\n")
    );
    assert!(run.out.ends_with("220 2.0.0 Ready to start TLS\r\n"));
}

#[test]
fn starttls_resets_the_session_and_offers_auth() {
    let config = ServerConfig::default().security(ServerSecurity::StartTls);
    let now = Instant::now();
    let mut server = Server::new(config, now);
    let mut run = Run {
        out: String::new(),
        events: Vec::new(),
        body: Vec::new(),
    };
    // The test application completes the "handshake" when asked.
    server.handle_input(now, b"EHLO c\r\n").expect("ok");
    drain(&mut server, now, &mut run);
    server.handle_input(now, b"STARTTLS\r\n").expect("ok");
    drain(&mut server, now, &mut run);
    assert!(server.is_tls());
    assert_eq!(server.client_name(), None, "EHLO is forgotten after TLS");
    server
        .handle_input(now, b"MAIL FROM:<a@example.com>\r\nEHLO c\r\n")
        .expect("ok");
    drain(&mut server, now, &mut run);
    assert!(run.out.contains("503 5.5.1 EHLO or HELO first\r\n"));
    assert!(run.out.ends_with("250 AUTH PLAIN LOGIN\r\n"));
    assert!(!run.out.ends_with("STARTTLS\r\n"));
}

#[test]
fn plaintext_pipelined_after_starttls_fails_the_session() {
    let config = ServerConfig::default().security(ServerSecurity::StartTls);
    // In the same read as STARTTLS: discarded, no 220.
    let run = run_pieces(
        &config,
        &[b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@example.com>\r\n"],
        false,
    );
    assert!(!run.out.contains("220 2.0.0"));
    assert!(
        run.out
            .ends_with("421 4.7.0 Commands pipelined after STARTTLS, closing\r\n")
    );
    assert_eq!(
        run.events.last().map(String::as_str),
        Some("Closed { error: Some(PlaintextAfterStartTls) }")
    );
    assert!(!run.events.iter().any(|e| e.starts_with("Mail")));
    // After the 220, before the handshake is reported: the same.
    let now = Instant::now();
    let mut server = Server::new(config, now);
    server
        .handle_input(now, b"EHLO c\r\nSTARTTLS\r\n")
        .expect("ok");
    while server.poll_event().is_some() {}
    assert!(!server.wants_input());
    assert_eq!(
        server.handle_input(now, b"M"),
        Err(ServerError::PlaintextAfterStartTls)
    );
    assert_eq!(
        server.handle_input(now, b"more"),
        Err(ServerError::PlaintextAfterStartTls)
    );
}

#[test]
fn bdat_chunks_are_read_taken_or_discarded() {
    let auth = plain("u", "secret");
    let text = format!(
        "EHLO c\r\nAUTH PLAIN {auth}\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n\
         BDAT 7\r\nline\r\n.BDAT 0 LAST\r\nBDAT 3 LAST\r\nxyzNOOP\r\n"
    );
    let run = script(&loopback(), text.as_bytes());
    assert_eq!(run.body, b"line\r\n.", "BDAT content is not un-stuffed");
    assert!(run.out.ends_with(
        "250 2.0.0 7 octets received\r\n250 2.0.0 Ok: queued, 7 octets\r\n\
         503 5.5.1 MAIL first\r\n250 2.0.0 OK\r\n"
    ));
    assert!(run.events.iter().any(|e| e == "Data { chunking: true }"));
}

#[test]
fn limits_refuse_the_message_at_its_end() {
    let auth = plain("u", "secret");
    let head = format!(
        "EHLO c\r\nAUTH PLAIN {auth}\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
    );
    let config = loopback().max_message_size(Some(100)).max_body_chunk(16);
    let big = format!("{head}{}\r\n.\r\nNOOP\r\n", "x".repeat(150));
    let run = script(&config, big.as_bytes());
    assert!(
        run.out
            .ends_with("552 5.3.4 Message too big\r\n250 2.0.0 OK\r\n")
    );
    assert!(run.events.iter().any(|e| e.starts_with("MessageRefused")));
    assert!(!run.events.iter().any(|e| e.starts_with("MessageEnd")));
    let long = format!("{head}{}\r\n.\r\n", "y".repeat(999));
    let run = script(&loopback().max_body_chunk(64), long.as_bytes());
    assert!(
        run.out
            .ends_with("554 5.6.0 Message has a line too long\r\n")
    );
    let nul = format!("{head}a\0b\r\n.\r\n");
    let run = script(&loopback(), nul.as_bytes());
    assert!(run.out.ends_with("554 5.6.0 Message has a NUL byte\r\n"));
    // Declared too big: refused at MAIL.
    let declared =
        format!("EHLO c\r\nAUTH PLAIN {auth}\r\nMAIL FROM:<a@example.com> SIZE=100000\r\n");
    let run = script(&loopback(), declared.as_bytes());
    assert!(
        run.out
            .ends_with("552 5.3.4 Message size exceeds fixed limit\r\n")
    );
}

#[test]
fn smuggled_end_markers_stay_content() {
    let auth = plain("u", "secret");
    let text = format!(
        "EHLO c\r\nAUTH PLAIN {auth}\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n\
         one\n.\nMAIL FROM:<x@example.com>\r\ntwo\r.\rthree\r\n.\r\n"
    );
    let run = script(&loopback(), text.as_bytes());
    assert_eq!(
        run.body,
        b"one\n.\nMAIL FROM:<x@example.com>\r\ntwo\r.\rthree\r\n"
    );
    assert_eq!(
        run.events.iter().filter(|e| e.starts_with("Mail")).count(),
        1
    );
}

#[test]
fn long_lines_unknown_commands_and_the_error_cap() {
    let config = loopback().max_bad_commands(3);
    let long = format!("EHLO c\r\nNOOP {}\r\nNOOP\r\n", "z".repeat(3000));
    let run = script(&loopback(), long.as_bytes());
    assert!(
        run.out
            .ends_with("500 5.5.6 Line too long\r\n250 2.0.0 OK\r\n")
    );
    let run = script(&config, b"A\r\nB\r\nC\r\nNOOP\r\n");
    assert!(
        run.out.ends_with(
            "500 5.5.2 Command not recognized\r\n421 4.7.0 Too many errors, closing\r\n"
        )
    );
    assert_eq!(
        run.events.last().map(String::as_str),
        Some("Closed { error: Some(TooManyBadCommands) }")
    );
}

#[test]
fn eof_inside_a_transaction_is_an_error_outside_it_is_not() {
    let auth = plain("u", "secret");
    let text = format!("EHLO c\r\nAUTH PLAIN {auth}\r\nMAIL FROM:<a@example.com>\r\n");
    let run = run_pieces(&loopback(), &[text.as_bytes()], true);
    assert_eq!(
        &run.events[run.events.len() - 2..],
        ["Reset", "Closed { error: Some(UnexpectedEof) }"]
    );
    let run = run_pieces(&loopback(), &[b"EHLO c\r\n"], true);
    assert_eq!(
        run.events.last().map(String::as_str),
        Some("Closed { error: None }")
    );
}

#[test]
fn timeouts_on_virtual_time() {
    let start = Instant::now();
    let config = loopback();
    let mut server = Server::new(config, start);
    let deadline = server.poll_timeout().expect("waiting for a command");
    assert_eq!(deadline, start + Duration::from_secs(300));
    server
        .handle_timeout(deadline - Duration::from_secs(1))
        .expect("not yet");
    // Input restarts the wait.
    let later = start + Duration::from_secs(200);
    server.handle_input(later, b"EHLO c\r\n").expect("ok");
    assert_eq!(
        server.poll_timeout(),
        Some(later + Duration::from_secs(300))
    );
    // While the application holds a question, no timeout runs.
    let auth = plain("u", "secret");
    server
        .handle_input(later, format!("AUTH PLAIN {auth}\r\n").as_bytes())
        .expect("ok");
    assert_eq!(server.pending(), Some(Question::Authenticate));
    assert_eq!(server.poll_timeout(), None);
    server.accept(later).expect("answers");
    let deadline = server.poll_timeout().expect("waiting again");
    assert_eq!(
        server.handle_timeout(deadline),
        Err(ServerError::Timeout {
            waiting_for: "a command"
        })
    );
    assert_eq!(
        server.poll_timeout(),
        None,
        "a fired timer is not due again"
    );
    let out = String::from_utf8_lossy(server.poll_transmit().expect("bytes")).into_owned();
    assert!(out.ends_with("421 4.4.2 Timeout, closing connection\r\n"));
}

#[test]
fn misuse_changes_nothing() {
    let now = Instant::now();
    let mut server = Server::new(loopback(), now);
    assert_eq!(server.accept(now), Err(ServerMisuse::NothingAsked));
    assert_eq!(
        server.handle_tls_established(now),
        Err(ServerMisuse::NoTlsPending)
    );
    let auth = plain("u", "secret");
    server
        .handle_input(now, format!("EHLO c\r\nAUTH PLAIN {auth}\r\n").as_bytes())
        .expect("ok");
    let wrong = Reply::new(250, &["2.0.0 OK"]).expect("valid");
    assert_eq!(
        server.answer(now, wrong),
        Err(ServerMisuse::WrongReply {
            question: Question::Authenticate,
            code: 250
        })
    );
    assert_eq!(server.pending(), Some(Question::Authenticate));
    assert_eq!(server.authenticated(), None);
    server.accept(now).expect("answers");
    assert_eq!(server.authenticated(), Some("u"));
}

#[test]
fn pipelined_input_waits_within_its_bound() {
    let now = Instant::now();
    let mut server = Server::new(loopback().max_buffered_input(4096), now);
    let auth = plain("u", "secret");
    server
        .handle_input(now, format!("EHLO c\r\nAUTH PLAIN {auth}\r\n").as_bytes())
        .expect("ok");
    assert!(!server.wants_input());
    let flood = "NOOP\r\n".repeat(1000);
    assert_eq!(
        server.handle_input(now, flood.as_bytes()),
        Err(ServerError::InputOverflow { limit: 4096 })
    );
}

#[test]
fn relayed_reply_text_loses_control_characters() {
    let upstream =
        Reply::new(550, &["5.7.1 bad\x1b[31m sender\x07", "more \u{202e}text"]).expect("valid");
    let relayed = upstream.relayable();
    assert_eq!(relayed.code(), 550);
    assert_eq!(relayed.enhanced(), upstream.enhanced());
    let mut wire = Vec::new();
    relayed.write_wire(&mut wire);
    assert_eq!(wire, b"550-5.7.1 bad[31m sender\r\n550 more text\r\n");
}

/// The client machine and the server machine back to back: what the client
/// sends is what the server hands out, for DATA and BDAT.
fn back_to_back(chunking: bool, body: &[u8]) -> (Vec<u8>, Vec<String>) {
    let now = Instant::now();
    let mut server = Server::new(loopback(), now);
    let config = ClientConfig::default()
        .tls(Security::Plaintext)
        .use_chunking(chunking)
        .dangerous_allow_credentials_without_tls(true);
    let mut client = Client::new(config, now);
    let envelope = Envelope::new(
        Mailbox::parse("a@example.com").expect("valid"),
        [
            Mailbox::parse("b@example.com").expect("valid"),
            Mailbox::parse("nobody@example.com").expect("valid"),
        ],
    );
    let mut got = Vec::new();
    let mut outcome = Vec::new();
    let mut body_left = body;
    for _ in 0..10_000 {
        if let Some(bytes) = server.poll_transmit() {
            let bytes = bytes.to_vec();
            server.advance_transmit(bytes.len());
            client.handle_input(now, &bytes).expect("client reads");
        }
        if let Some(bytes) = client.poll_transmit() {
            let bytes = bytes.to_vec();
            client.advance_transmit(bytes.len());
            let _ = server.handle_input(now, &bytes);
        }
        while let Some(event) = server.poll_event() {
            if let ServerEvent::BodyChunk(bytes) = &event {
                got.extend_from_slice(bytes);
            }
            answer(&mut server, now, &event);
        }
        while let Some(event) = client.poll_event() {
            match event {
                Event::Ready { .. } => {
                    let credentials = postern_smtp::Credentials::password("u", "secret");
                    client.authenticate(now, &credentials, None).expect("auth");
                }
                Event::Authenticated { .. } => {
                    client.send_envelope(now, &envelope).expect("envelope");
                }
                Event::BodyWritable { .. } => {
                    while !body_left.is_empty() {
                        let n = client.write_body(now, body_left).expect("body");
                        body_left = &body_left[n..];
                        if let Some(bytes) = client.poll_transmit() {
                            let bytes = bytes.to_vec();
                            client.advance_transmit(bytes.len());
                            let _ = server.handle_input(now, &bytes);
                        }
                    }
                    client.finish_body(now).expect("finish");
                }
                Event::Delivered(report) => {
                    outcome.push(format!(
                        "delivered: {} rejected",
                        report.recipients.iter().filter(|r| !r.accepted()).count()
                    ));
                    client.quit(now).expect("quit");
                }
                Event::Closed { error } => {
                    outcome.push(format!("closed: {error:?}"));
                    return (got, outcome);
                }
                other => outcome.push(format!("{other:?}")),
            }
        }
    }
    panic!("the two machines did not finish: {outcome:?}");
}

#[test]
fn client_and_server_back_to_back() {
    let body = b"Subject: t\r\n\r\n.one\r\n..two\r\nbare\nlf\r\n.\r\nend";
    // The client canonicalises line ends and stuffs dots; the server undoes
    // the stuffing: the server sees the canonical message.
    let canonical = b"Subject: t\r\n\r\n.one\r\n..two\r\nbare\r\nlf\r\n.\r\nend\r\n";
    for chunking in [false, true] {
        let (got, outcome) = back_to_back(chunking, body);
        assert_eq!(got, canonical, "chunking: {chunking}");
        assert_eq!(
            outcome,
            ["delivered: 1 rejected", "closed: None"],
            "chunking: {chunking}"
        );
    }
}
