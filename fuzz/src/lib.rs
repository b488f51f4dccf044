//! The bodies of postern's fuzz targets. Each checks invariants, not only
//! "does not panic": incremental parsing equals whole-input parsing, buffers
//! stay within their documented bounds, timers never fire twice for the same
//! instant, errors stay sticky, nothing is sent after a fatal error, and no
//! secret appears in any error or event text.
//!
//! The targets in `fuzz_targets/` are one line each; `#![no_main]` and the
//! `fuzz_target!` macro need an unmangled symbol, so `unsafe_code` is
//! forbidden here and not there.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use postern_oauth::{
    CacheConfig, FetchError, HttpLimits, HttpResponse, OAuthError, Outcome, ResponseParser, Secret,
    TokenCache, TokenResponse, classify, parse_redirect,
};
use postern_smtp::body::{canonical, reference_encode};
use postern_smtp::reply::parse_one;
use postern_smtp::sasl::decode_challenge;
use postern_smtp::{
    BodyConfig, BodyEncoder, BodyError, BodyStats, Capabilities, Client, ClientConfig, Credentials,
    Envelope, LongLines, Mailbox, Mechanism, NulBytes, ReplyLimits, ReplyParser, Security,
};

/// Chunk sizes for splitting an input, derived from its first byte.
fn chunks(data: &[u8]) -> (usize, &[u8]) {
    match data.split_first() {
        Some((b, rest)) => (usize::from(*b % 17) + 1, rest),
        None => (1, data),
    }
}

/// What a reply parser produced for an input: replies and the first error.
fn parse_all(data: &[u8], chunk: usize, limits: ReplyLimits) -> (Vec<String>, Option<String>) {
    let mut parser = ReplyParser::new(limits);
    let mut replies = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        let mut piece = piece;
        while !piece.is_empty() {
            match parser.parse(piece) {
                Ok((used, reply)) => {
                    if let Some(r) = reply {
                        assert!(r.line_count() <= limits.max_lines);
                        assert!(r.lines().all(|l| l.len() <= limits.max_line_len));
                        replies.push(format!("{r:?}"));
                    }
                    assert!(used <= piece.len());
                    if used == 0 {
                        break;
                    }
                    piece = &piece[used..];
                }
                Err(e) => return (replies, Some(format!("{e:?}"))),
            }
        }
    }
    (replies, None)
}

/// SMTP reply parser: any chunking gives the same replies and error as the
/// whole input; replies stay within the limits.
pub fn reply_parser(data: &[u8]) {
    let (chunk, data) = chunks(data);
    let limits = ReplyLimits::default()
        .max_line_len(64)
        .max_lines(8)
        .max_reply_bytes(256);
    let whole = parse_all(data, data.len().max(1), limits);
    let split = parse_all(data, chunk, limits);
    assert_eq!(whole, split);
    let bytewise = parse_all(data, 1, limits);
    assert_eq!(whole, bytewise);
}

/// EHLO capability parsing of any reply.
pub fn ehlo(data: &[u8]) {
    if let Ok(Some((reply, used))) = parse_one(data, ReplyLimits::default()) {
        assert!(used <= data.len());
        let caps = Capabilities::from_ehlo(&reply);
        for m in [
            Mechanism::Plain,
            Mechanism::Login,
            Mechanism::XOAuth2,
            Mechanism::OAuthBearer,
        ] {
            assert_eq!(caps.offers(m), caps.auth.contains(&m));
        }
        if let Some(max) = caps.max_size {
            assert!(caps.size || max == 0);
        }
    }
}

/// SASL challenge decoding: what decodes re-encodes to the same bytes.
pub fn sasl_challenge(data: &[u8]) {
    if let Some(decoded) = decode_challenge(data) {
        let again = STANDARD.encode(&decoded);
        assert_eq!(decode_challenge(again.as_bytes()), Some(decoded));
    }
}

/// Input of [`body_encoder`].
#[derive(Arbitrary, Debug)]
pub struct BodyInput {
    data: Vec<u8>,
    dot_stuffing: bool,
    eight_bit: bool,
    allow_long: bool,
    allow_nul: bool,
    binary: bool,
    cuts: Vec<u16>,
}

fn encode_split(
    input: &[u8],
    config: BodyConfig,
    cuts: &[u16],
) -> Result<(Vec<u8>, BodyStats), BodyError> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| usize::from(*c) % (input.len() + 1))
        .collect();
    points.sort_unstable();
    let mut enc = BodyEncoder::new(config);
    let mut out = Vec::new();
    let mut at = 0;
    for p in points.into_iter().chain([input.len()]) {
        let before = out.len();
        enc.encode(&input[at..p], &mut out)?;
        // One chunk's output is bounded by twice its input plus a CRLF.
        assert!(out.len() - before <= 2 * (p - at) + 2);
        at = p;
    }
    let stats = enc.finish(&mut out)?;
    Ok((out, stats))
}

/// A refusal of an over-long line reports the length seen so far, which
/// depends on chunking: compare the line only.
fn same_line(
    r: Result<(Vec<u8>, BodyStats), BodyError>,
) -> Result<(Vec<u8>, BodyStats), BodyError> {
    r.map_err(|e| match e {
        BodyError::LineTooLong { line, len } => {
            assert!(len > 998);
            BodyError::LineTooLong { line, len: 0 }
        }
        e => e,
    })
}

/// `true` when the input really breaks the rule `e` names.
fn justified(e: &BodyError, data: &[u8], config: BodyConfig) -> bool {
    match *e {
        BodyError::LineTooLong { line, .. } => {
            config.long_lines == LongLines::Reject
                && canonical(data)
                    .split(|b| *b == b'\n')
                    .nth(
                        usize::try_from(line)
                            .unwrap_or(usize::MAX)
                            .saturating_sub(1),
                    )
                    .is_some_and(|l| l.len().saturating_sub(1) > 998)
        }
        BodyError::Nul { offset } => {
            config.nul == NulBytes::Reject
                && usize::try_from(offset).ok().and_then(|o| data.get(o)) == Some(&0)
        }
        BodyError::EightBit { offset } => {
            !config.eight_bit
                && usize::try_from(offset)
                    .ok()
                    .and_then(|o| data.get(o))
                    .is_some_and(|b| *b >= 0x80)
        }
        _ => false,
    }
}

/// Body encoder: equal to the reference encoder under any chunking; with
/// dot-stuffing the output has no bare CR or LF, no end-of-data line before
/// the terminator, and un-stuffs to the canonical input.
pub fn body_encoder(input: BodyInput) {
    let config = BodyConfig::default()
        .dot_stuffing(input.dot_stuffing && !input.binary)
        .eight_bit(input.eight_bit)
        .long_lines(if input.allow_long {
            LongLines::Allow
        } else {
            LongLines::Reject
        })
        .nul(if input.allow_nul {
            NulBytes::Allow
        } else {
            NulBytes::Reject
        })
        .binary(input.binary);
    let want = same_line(reference_encode(&input.data, config));
    let got = same_line(encode_split(&input.data, config, &input.cuts));
    match (&got, &want) {
        // A body that breaks two rules may be refused for either: the
        // streaming encoder can see a line pass 998 octets before it reaches
        // a NUL further along that line, the reference checks the length at
        // the line end. Both refusals must be real.
        (Err(a), Err(b)) if std::mem::discriminant(a) != std::mem::discriminant(b) => {
            assert!(justified(a, &input.data, config), "{a:?} not in the input");
            assert!(justified(b, &input.data, config), "{b:?} not in the input");
            return;
        }
        _ => assert_eq!(got, want),
    }
    let Ok((wire, stats)) = got else { return };
    assert_eq!(stats.input_bytes, input.data.len() as u64);
    assert_eq!(stats.output_bytes, wire.len() as u64);
    if config.binary {
        assert_eq!(wire, input.data);
        return;
    }
    // Every CR is followed by LF and every LF preceded by CR.
    for (i, b) in wire.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(wire.get(i + 1), Some(&b'\n')),
            b'\n' => assert!(i > 0 && wire[i - 1] == b'\r'),
            _ => {}
        }
    }
    if config.dot_stuffing {
        let body = wire.strip_suffix(b".\r\n").expect("terminator");
        // No line of the body is a lone dot, and it ends with a line end.
        assert!(body.is_empty() || body.ends_with(b"\r\n"));
        let mut unstuffed = Vec::new();
        for line in body.split_inclusive(|b| *b == b'\n') {
            assert_ne!(line, b".\r\n");
            unstuffed.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        assert_eq!(unstuffed, canonical(&input.data));
    } else {
        assert_eq!(wire, canonical(&input.data));
    }
}

const PASSWORD: &str = "pw-SECRET-1";
const TOKEN: &str = "tok-SECRET-2";

/// One step of [`client`].
#[derive(Arbitrary, Debug)]
pub enum Op {
    /// Bytes from the server.
    Input(Vec<u8>),
    /// The server closed the connection.
    Eof,
    /// Time passes (milliseconds).
    Advance(u16),
    /// Time jumps past the current deadline, and the timer fires.
    Timeout,
    /// The TLS handshake the client asked for finished.
    TlsEstablished,
    /// AUTH with a password (even) or a token (odd), with or without a forced
    /// mechanism.
    Auth(u8, Option<u8>),
    /// MAIL/RCPT/DATA for 1 to 5 recipients.
    Envelope(u8),
    /// Body bytes.
    Body(Vec<u8>),
    /// End of the body.
    Finish,
    /// RSET.
    Rset,
    /// NOOP.
    Noop,
    /// QUIT.
    Quit,
    /// The socket took only this many pending bytes.
    Write(u16),
    /// A stepwise transaction with 0 to 2 recipients up front.
    Open(u8),
    /// Another recipient for the stepwise transaction.
    AddRecipient(u8),
    /// Close (`false`) or abandon (`true`) the stepwise envelope.
    EndEnvelope(bool),
}

/// Input of [`client`].
#[derive(Arbitrary, Debug)]
pub struct ClientInput {
    tls: u8,
    chunking: bool,
    allow_plain: bool,
    pipeline_transactions: bool,
    ops: Vec<Op>,
}

const MAX_PENDING_BODY: usize = 4096;

/// The whole SMTP client driven by a hostile server and an arbitrary caller:
/// no panic, timers move forward, errors are sticky, nothing is transmitted
/// after a fatal error, buffers stay bounded, no secret in any text.
pub fn client(input: ClientInput) {
    let start = Instant::now();
    let mut now = start;
    let config = ClientConfig::default()
        .tls(match input.tls % 4 {
            0 => Security::ImplicitTls,
            1 => Security::StartTls,
            2 => Security::StartTlsOpportunistic,
            _ => Security::Plaintext,
        })
        .use_chunking(input.chunking)
        .pipeline_transactions(input.pipeline_transactions)
        .dangerous_allow_credentials_without_tls(input.allow_plain)
        .max_pending_body(MAX_PENDING_BODY);
    let mut c = Client::new(config, now);
    let server_said_secret = input.ops.iter().any(|op| match op {
        Op::Input(b) | Op::Body(b) => b.windows(6).any(|w| w == b"SECRET"),
        _ => false,
    });
    let mut sticky: Option<String> = None;
    let from = Mailbox::parse("from@example.com").expect("valid");
    for op in input.ops {
        match op {
            Op::Input(b) => drop(c.handle_input(now, &b)),
            Op::Eof => drop(c.handle_eof(now)),
            Op::Advance(ms) => now += Duration::from_millis(u64::from(ms)),
            Op::Timeout => {
                if let Some(at) = c.poll_timeout() {
                    now = now.max(at);
                }
                drop(c.handle_timeout(now));
                if let Some(next) = c.poll_timeout() {
                    assert!(next > now, "timer due again at once");
                }
            }
            Op::TlsEstablished => drop(c.handle_tls_established(now)),
            Op::Auth(kind, mech) => {
                let creds = if kind % 2 == 0 {
                    Credentials::password("user", PASSWORD)
                } else {
                    Credentials::bearer("user@example.com", TOKEN)
                };
                let mech = mech.map(|m| match m % 4 {
                    0 => Mechanism::Plain,
                    1 => Mechanism::Login,
                    2 => Mechanism::XOAuth2,
                    _ => Mechanism::OAuthBearer,
                });
                if let Err(e) = c.authenticate(now, &creds, mech) {
                    assert!(!format!("{e} {e:?}").contains("SECRET"));
                }
            }
            Op::Envelope(n) => {
                let rcpts = (0..=n % 5)
                    .map(|i| Mailbox::parse(&format!("r{i}@example.com")).expect("valid"));
                drop(c.send_envelope(now, &Envelope::new(from.clone(), rcpts)));
            }
            Op::Open(n) => {
                let mut envelope = Envelope::new(
                    from.clone(),
                    [Mailbox::parse("r@example.com").expect("valid")],
                );
                envelope.recipients.truncate(usize::from(n % 3).min(1));
                if n % 3 == 2 {
                    envelope
                        .recipients
                        .push(Mailbox::parse("s@example.com").expect("valid").into());
                }
                drop(c.open_transaction(now, &envelope));
            }
            Op::AddRecipient(i) => {
                let to = Mailbox::parse(&format!("a{i}@example.com")).expect("valid");
                drop(c.add_recipient(now, to.into()));
            }
            Op::EndEnvelope(true) => drop(c.abandon_envelope(now)),
            Op::EndEnvelope(false) => drop(c.close_envelope(now)),
            Op::Body(b) => drop(c.write_body(now, &b)),
            Op::Finish => drop(c.finish_body(now)),
            Op::Rset => drop(c.rset(now)),
            Op::Noop => drop(c.noop(now)),
            Op::Quit => drop(c.quit(now)),
            Op::Write(n) => {
                if c.poll_transmit().is_some() {
                    c.advance_transmit(usize::from(n));
                }
            }
        }
        // Outputs, in the documented order.
        if let Some(pending) = c.poll_transmit() {
            assert!(
                pending.len() <= MAX_PENDING_BODY + 64 * 1024,
                "transmit buffer {}",
                pending.len()
            );
        }
        while let Some(event) = c.poll_event() {
            if !server_said_secret {
                let text = format!("{event:?}");
                assert!(!text.contains("SECRET"), "secret in event {text}");
            }
        }
        match (&sticky, c.error()) {
            (Some(before), Some(e)) => assert_eq!(before, &format!("{e:?}"), "error changed"),
            (Some(_), None) => panic!("sticky error vanished"),
            (None, Some(e)) => {
                if !server_said_secret {
                    assert!(!format!("{e} {e:?}").contains("SECRET"));
                }
                sticky = Some(format!("{e:?}"));
            }
            (None, None) => {}
        }
        if sticky.is_some() {
            assert!(c.poll_transmit().is_none(), "bytes after a fatal error");
            assert!(c.poll_timeout().is_none());
        }
    }
}

fn http_parse(data: &[u8], chunk: usize, limits: HttpLimits) -> Result<HttpResponse, String> {
    let mut p = ResponseParser::new(limits);
    for piece in data.chunks(chunk.max(1)) {
        match p.push(piece) {
            Ok(Some(r)) => return Ok(r),
            Ok(None) => {}
            Err(e) => return Err(format!("{e:?}")),
        }
    }
    p.finish().map_err(|e| format!("{e:?}"))
}

/// HTTP response parser: chunking does not change the outcome; a response
/// stays within the limits.
pub fn http_response(data: &[u8]) {
    let (chunk, data) = chunks(data);
    let limits = HttpLimits::default()
        .max_head(512)
        .max_headers(8)
        .max_body(1024);
    let whole = http_parse(data, data.len().max(1), limits);
    let split = http_parse(data, chunk, limits);
    assert_eq!(whole.is_ok(), split.is_ok(), "{whole:?} / {split:?}");
    if let (Ok(a), Ok(b)) = (&whole, &split) {
        assert_eq!(a, b);
        assert!(a.body.len() <= limits.max_body);
        assert!(a.headers.len() <= limits.max_headers);
    }
}

/// Input of [`token_response`].
#[derive(Arbitrary, Debug)]
pub struct TokenInput {
    status: u16,
    json: bool,
    retry_after: Option<String>,
    body: Vec<u8>,
}

/// Token response classification: any status and body; an access token the
/// response carried never shows in the text of a non-token outcome.
pub fn token_response(input: TokenInput) {
    let secret = "SECRETVALUE-7";
    let mut body = format!("{{\"access_token\":\"{secret}\",").into_bytes();
    body.extend_from_slice(&input.body);
    let mut headers = Vec::new();
    if input.json {
        headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
    }
    if let Some(r) = input.retry_after {
        headers.push(("Retry-After".to_owned(), r));
    }
    let response = HttpResponse::new(input.status, headers, body);
    let outcome = classify(&response, Some(1_800_000_000));
    let text = match &outcome {
        Outcome::Token(t) => format!("{t:?}"),
        Outcome::OAuthError(e) => format!("{e} {e:?}"),
        Outcome::ProtocolError(p) => format!("{p} {p:?}"),
        other => format!("{other:?}"),
    };
    if !input.body.windows(6).any(|w| w == b"SECRET") {
        assert!(!text.contains(secret), "token in {text}");
    }
    if let Outcome::Retry { after: Some(a), .. } = outcome {
        assert!(a <= postern_oauth::response::MAX_RETRY_AFTER);
    }
}

/// One step of [`token_cache`].
#[derive(Arbitrary, Debug)]
pub enum CacheOp {
    /// Seconds pass.
    Advance(u16),
    /// A send looks up the token.
    Lookup,
    /// A held ticket is reported with a token.
    Token {
        /// Which held ticket.
        which: u8,
        /// `expires_in`, seconds.
        expires_in: Option<u16>,
        /// `refresh_in`, seconds.
        refresh_in: Option<u16>,
        /// A rotated refresh token came back.
        rotated: bool,
    },
    /// A held ticket is reported as failed.
    Failure {
        /// Which held ticket.
        which: u8,
        /// Which kind of failure.
        kind: u8,
        /// A `Retry-After`, seconds.
        after: Option<u16>,
    },
    /// The SMTP server rejected the token.
    Invalidate,
    /// The cache's timer fires.
    Timeout,
}

/// The token cache driven by arbitrary events: never a token inside the
/// expiry margin, one fetch at a time, timers move forward.
pub fn token_cache(ops: Vec<CacheOp>) {
    let config = CacheConfig::default();
    let mut cache = TokenCache::new(config, Some(Secret::new("refresh-SECRET")));
    let start = Instant::now();
    let mut now = start;
    let mut tickets = Vec::new();
    for op in ops {
        match op {
            CacheOp::Advance(s) => now += Duration::from_secs(u64::from(s)),
            CacheOp::Lookup => {
                let fetching = cache.fetching();
                let l = cache.lookup(now);
                if let Some(t) = &l.token {
                    assert!(t.expires_at > now, "expired token served");
                }
                if let Some(f) = l.fetch {
                    assert!(!fetching, "second fetch while one is in flight");
                    tickets.push(f);
                }
            }
            CacheOp::Token {
                which,
                expires_in,
                refresh_in,
                rotated,
            } => {
                if tickets.is_empty() {
                    continue;
                }
                let f = tickets.remove(usize::from(which) % tickets.len());
                let mut response = TokenResponse::bearer(
                    Secret::new("at-SECRET"),
                    expires_in.map(|s| Duration::from_secs(u64::from(s))),
                );
                response.refresh_in = refresh_in.map(|s| Duration::from_secs(u64::from(s)));
                response.refresh_token = rotated.then(|| Secret::new("refresh-SECRET-2"));
                cache.handle_token(now, f, response);
            }
            CacheOp::Failure { which, kind, after } => {
                if tickets.is_empty() {
                    continue;
                }
                let f = tickets.remove(usize::from(which) % tickets.len());
                let error = match kind % 4 {
                    0 => FetchError::OAuth(OAuthError::default()),
                    1 => FetchError::Retry {
                        status: 429,
                        after: after.map(|s| Duration::from_secs(u64::from(s))),
                    },
                    2 => FetchError::Transport("reset".to_owned()),
                    _ => FetchError::TimedOut,
                };
                cache.handle_failure(now, f, error);
            }
            CacheOp::Invalidate => cache.invalidate(now),
            CacheOp::Timeout => {
                if let Some(at) = cache.poll_timeout() {
                    now = now.max(at);
                }
                if let Some(f) = cache.handle_timeout(now) {
                    tickets.push(f);
                }
                if let Some(next) = cache.poll_timeout() {
                    assert!(next > now, "cache timer due again at once");
                }
            }
        }
        while let Some(event) = cache.poll_event() {
            assert!(!format!("{event:?}").contains("SECRET"));
        }
        assert!(!format!("{cache:?}").contains("SECRET"));
    }
}

/// Authorization redirect parser: any text, any expected state.
pub fn redirect(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (state, url) = text.split_once('\u{0}').unwrap_or(("s", &text));
    match parse_redirect(url, state) {
        Ok(code) => {
            assert!(url.contains("code"));
            assert!(!state.is_empty() || url.contains("state"));
            let _ = code;
        }
        Err(e) => {
            // What the CLI prints: no control characters (terminal
            // escapes from a crafted URL), bounded length.
            let shown = e.to_string();
            assert!(!shown.chars().any(char::is_control), "{shown:?}");
            assert!(
                shown.chars().count() < 512,
                "{} characters",
                shown.chars().count()
            );
        }
    }
}

/// The nodemailer object-literal reader: never panics, stays within its
/// bounds, and whatever it reads survives a round trip through JSON (JSON
/// is a subset of what it reads), with errors that name a place inside the
/// text.
pub fn jsobject(data: &[u8]) {
    use postern_config::js::{MAX_INPUT, parse};
    let text = String::from_utf8_lossy(data);
    let env = |name: &str| (name.len() % 2 == 0).then(|| format!("v-{name}"));
    match parse(&text, &env) {
        Ok(value) => {
            assert!(text.len() <= MAX_INPUT);
            let json = serde_json::to_string(&value).expect("a JSON value serializes");
            let again = parse(&json, &env).expect("JSON is readable");
            assert_eq!(again, value, "round trip through {json}");
        }
        Err(e) => {
            let lines = text.split('\n').count();
            assert!(
                e.line >= 1 && e.line <= lines.max(1),
                "{e} in {lines} lines"
            );
            assert!(e.column >= 1);
            assert!(!e.message.is_empty());
        }
    }
}

/// One step of [`server`].
#[derive(Arbitrary, Debug)]
pub enum ServerOp {
    /// Bytes from the client.
    Input(Vec<u8>),
    /// The client closed the connection.
    Eof,
    /// Time passes (milliseconds).
    Advance(u16),
    /// Time jumps past the current deadline, and the timer fires.
    Timeout,
    /// The TLS handshake the server asked for finished.
    TlsEstablished,
    /// The application answers the open question: accept (0), a transient
    /// refusal (1), a permanent one (2), a reply of the wrong class (3).
    Answer(u8),
    /// The socket took only this many pending bytes.
    Write(u16),
}

/// Input of [`server`].
#[derive(Arbitrary, Debug)]
pub struct ServerInput {
    security: u8,
    plaintext_auth: bool,
    ops: Vec<ServerOp>,
}

const SERVER_INPUT_BOUND: usize = 8 * 1024;

/// The whole SMTP server driven by a hostile client and an arbitrary
/// application: no panic, timers move forward, errors are sticky, nothing
/// is transmitted after the session ended except what was queued with its
/// end, held input and body chunks stay within their bounds, and the
/// client's password never appears in a `Debug` of an event.
pub fn server(input: ServerInput) {
    use postern_smtp::{Reply, Server, ServerConfig, ServerEvent, ServerSecurity};
    let start = Instant::now();
    let mut now = start;
    let config = ServerConfig::default()
        .security(match input.security % 3 {
            0 => ServerSecurity::Plaintext,
            1 => ServerSecurity::StartTls,
            _ => ServerSecurity::ImplicitTls,
        })
        .plaintext_auth(input.plaintext_auth)
        .max_buffered_input(SERVER_INPUT_BOUND)
        .max_command_line(512)
        .max_body_chunk(1024)
        .max_message_size(Some(4096));
    let mut s = Server::new(config, now);
    let mut sticky: Option<String> = None;
    let mut closed = false;
    for op in input.ops {
        match op {
            ServerOp::Input(b) => {
                let result = s.handle_input(now, &b);
                if let (Some(before), Err(e)) = (&sticky, &result) {
                    assert_eq!(before, &format!("{e:?}"), "error changed");
                }
            }
            ServerOp::Eof => drop(s.handle_eof(now)),
            ServerOp::Advance(ms) => now += Duration::from_millis(u64::from(ms)),
            ServerOp::Timeout => {
                if let Some(at) = s.poll_timeout() {
                    now = now.max(at);
                }
                drop(s.handle_timeout(now));
                if let Some(next) = s.poll_timeout() {
                    assert!(next > now, "timer due again at once");
                }
            }
            ServerOp::TlsEstablished => drop(s.handle_tls_established(now)),
            ServerOp::Answer(kind) => {
                let reply = match (kind % 4, s.pending()) {
                    (0, _) => {
                        drop(s.accept(now));
                        None
                    }
                    (1, _) => Reply::new(451, &["4.3.0 try later"]),
                    (2, _) => Reply::new(550, &["5.7.1 no"]),
                    _ => Reply::new(221, &["2.0.0 wrong"]),
                };
                if let Some(reply) = reply {
                    let before = s.pending();
                    if s.answer(now, reply).is_err() {
                        assert_eq!(before, s.pending(), "a refused answer changed the question");
                    }
                }
            }
            ServerOp::Write(n) => {
                if s.poll_transmit().is_some() {
                    s.advance_transmit(usize::from(n));
                }
            }
        }
        while let Some(event) = s.poll_event() {
            match event {
                ServerEvent::Authenticate(request) => {
                    let password = request.password.expose();
                    let shown = format!("{request:?}");
                    let elsewhere = request.username.contains(password)
                        || request.authzid.as_deref().is_some_and(|a| a.contains(password))
                        || "AuthRequest mechanism Plain Login authzid username password redacted Some None"
                            .contains(password);
                    if !elsewhere {
                        assert!(!shown.contains(password), "password in {shown}");
                    }
                }
                ServerEvent::BodyChunk(chunk) => assert!(chunk.len() <= 1024),
                ServerEvent::Closed { error } => {
                    assert!(!closed, "closed twice");
                    closed = true;
                    if let Some(e) = error {
                        sticky.get_or_insert(format!("{e:?}"));
                    }
                }
                _ => {}
            }
        }
        assert_eq!(closed, s.is_closed());
        if closed {
            assert!(s.poll_timeout().is_none());
            assert!(!s.wants_input());
        }
    }
}

/// One step of processes sharing a token record ([`shared_record`]).
#[derive(Arbitrary, Debug)]
pub enum SharedOp {
    /// Time passes (milliseconds).
    Advance(u16),
    /// Process `who` asks the core what to do, and does it: adopt, wait, or
    /// take the lease (the compare-and-swap always succeeds here: one
    /// thread) and start a fetch.
    Plan {
        /// Which process (of 4).
        who: u8,
    },
    /// Process `who`'s fetch ends: a token (with a rotated refresh token or
    /// not), or a failure with a `Retry-After`.
    Complete {
        /// Which process.
        who: u8,
        /// The fetch failed.
        failed: bool,
        /// The server rotated the refresh token.
        rotated: bool,
        /// `Retry-After`, seconds.
        after: Option<u8>,
    },
}

/// The shared record's bytes and the processes' lease protocol, from
/// arbitrary bytes and steps: decoding never panics, sealed records open
/// only under their key and name, and while every fetch ends within its
/// lease no refresh token is redeemed twice and no rotated one is lost.
pub fn shared_record(input: (Vec<u8>, Vec<SharedOp>)) {
    use postern_oauth::shared::{
        self, Outcome as Shared, Plan, SharedConfig, SharedRecord, SharedToken, StoreKey,
    };
    let (bytes, ops) = input;
    let key = StoreKey::new([5; 32]);
    let _ = SharedRecord::from_bytes(&bytes, None, "k");
    let _ = SharedRecord::from_bytes(&bytes, Some(&key), "k");
    if let Ok(r) = SharedRecord::decode(&bytes) {
        let sealed = r.to_bytes(Some(&key), "k", [1; 24]);
        assert_eq!(
            SharedRecord::from_bytes(&sealed, Some(&key), "k").ok(),
            Some(r.clone())
        );
        assert!(SharedRecord::from_bytes(&sealed, Some(&key), "other").is_err());
    }

    let config = SharedConfig::default()
        .lease(Duration::from_secs(5))
        .margin(Duration::from_millis(500));
    let cache = CacheConfig::default();
    let names = ["a", "b", "c", "d"];
    let initial = Secret::new("rt-0");
    let mut store: Option<SharedRecord> = None;
    let mut now: u64 = 1_000_000;
    // Per process: the refresh token being redeemed and its lease end.
    let mut fetching: [Option<(Option<Secret>, u64)>; 4] = Default::default();
    // Refresh tokens the server retired (redeemed with a rotation).
    let mut consumed: Vec<Secret> = Vec::new();
    let mut chain_dead = false;
    let mut issued = 0u32;
    for op in ops.into_iter().take(256) {
        // A fetch still out when its lease lapses is a process that died
        // (the premise: a live one ends its fetch within the lease).
        for f in &mut fetching {
            if f.as_ref().is_some_and(|(_, until)| *until <= now) {
                *f = None;
            }
        }
        match op {
            SharedOp::Advance(ms) => now += u64::from(ms),
            SharedOp::Plan { who } => {
                let who = usize::from(who % 4);
                if fetching[who].is_some() {
                    continue;
                }
                match shared::plan(store.as_ref(), now, names[who], Some(&initial), &config) {
                    Plan::Adopt(t) => {
                        assert!(now < t.refresh_at_ms && now < t.expires_at_ms);
                    }
                    Plan::Wait { until_ms, .. } => assert!(until_ms > now),
                    Plan::Fetch { take, redeem, .. } => {
                        let lease = take.lease.as_ref().map_or(0, |l| l.until_ms);
                        assert!(lease > now);
                        // Nobody else holds a live lease.
                        for (i, f) in fetching.iter().enumerate() {
                            assert!(i == who || f.is_none(), "two live leases");
                        }
                        if let Some(rt) = &redeem {
                            // Once the server refused the chain's token, the whole
                            // chain is dead and an old copy can do no harm.
                            assert!(
                                chain_dead || !consumed.contains(rt),
                                "a retired refresh token redeemed"
                            );
                        }
                        store = Some(take);
                        fetching[who] = Some((redeem, lease));
                    }
                }
            }
            SharedOp::Complete {
                who,
                failed,
                rotated,
                after,
            } => {
                let who = usize::from(who % 4);
                let Some((redeem, lease)) = fetching[who].take() else {
                    continue;
                };
                let now_done = now;
                if !failed
                    && rotated
                    && let Some(rt) = &redeem
                {
                    consumed.push(rt.clone());
                }
                let outcome = if failed {
                    // A failure with a rotation bit set: the server refused
                    // the refresh token (retired).
                    if rotated && let Some(rt) = &redeem {
                        consumed.push(rt.clone());
                        chain_dead = true;
                    }
                    Shared::Failed {
                        retry_at_ms: after.map(|s| now_done + u64::from(s) * 1000),
                        retired: rotated,
                    }
                } else {
                    issued += 1;
                    let mut response = TokenResponse::bearer(
                        Secret::new(format!("at-{issued}")),
                        Some(Duration::from_secs(4)),
                    );
                    if rotated {
                        response.refresh_token = Some(Secret::new(format!("rt-{issued}")));
                    }
                    Shared::Token {
                        token: SharedToken::from_response(&response, now_done, &cache),
                        rotated: response.refresh_token.clone(),
                    }
                };
                let rotated_token = match &outcome {
                    Shared::Token { rotated, .. } => rotated.clone(),
                    Shared::Failed { .. } => None,
                };
                let settled = shared::settle(store.as_ref(), names[who], redeem.as_ref(), outcome);
                if let Some(rt) = rotated_token {
                    let _ = lease;
                    // Within the lease, the rotated token is what the store
                    // redeems next.
                    assert!(!settled.raced);
                    assert_eq!(settled.next.refresh_token.as_ref(), Some(&rt));
                }
                assert!(
                    settled
                        .next
                        .lease
                        .as_ref()
                        .is_none_or(|l| l.holder != names[who])
                );
                store = Some(settled.next);
            }
        }
    }
}
