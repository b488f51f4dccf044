//! A sans-IO SMTP **server** machine: the other side of [`crate::Client`],
//! for a submission proxy, a relay, or a test peer.
//!
//! The machine speaks the protocol and never decides policy. It reads
//! command lines, checks their syntax and their order, answers what the
//! protocol alone decides (EHLO, NOOP, RSET, a command out of sequence), and
//! asks the application everything else through events: who is this user,
//! may this sender send, is this recipient accepted, is the message taken.
//! The application answers each question with the reply to send, when it
//! knows it (after an upstream round trip, say); until then the machine
//! reads no further command, so replies always go out in command order,
//! under pipelining too.
//!
//! # The contract
//!
//! The same as the client's (design §2):
//!
//! - **Inputs:** [`Server::handle_input`] with every byte read from the
//!   client, [`Server::handle_eof`], [`Server::handle_timeout`] when
//!   [`Server::poll_timeout`] has passed, and
//!   [`Server::handle_tls_established`] after the TLS handshake asked for by
//!   [`ServerEvent::StartTls`].
//! - **Answers** from the application: [`Server::answer`] with a reply, or
//!   [`Server::accept`] for the standard positive one, to the question
//!   [`Server::pending`] names.
//! - **Outputs**, drained after every input or answer, in this order:
//!   [`Server::poll_transmit`] / [`Server::advance_transmit`],
//!   [`Server::poll_event`] until `None`, [`Server::poll_timeout`].
//! - **Two error channels.** Misuse by the application (answering when
//!   nothing was asked, a reply of the wrong class) is a [`ServerMisuse`]
//!   and changes nothing. A client that breaks the session (bytes injected
//!   after STARTTLS, too many errors, a timeout) is a sticky [`ServerError`],
//!   reported once as [`ServerEvent::Closed`].
//!
//! # Bounds
//!
//! Input not yet processed (pipelined commands while a question is open) is
//! held up to [`ServerConfig::max_buffered_input`]; a driver that stops
//! reading while [`Server::wants_input`] is `false` never reaches it.
//! Command lines are bounded by [`ServerConfig::max_command_line`], text
//! lines by [`ServerConfig::max_text_line`], messages by
//! [`ServerConfig::max_message_size`], and message content is handed out in
//! [`ServerEvent::BodyChunk`]s of at most [`ServerConfig::max_body_chunk`]
//! bytes, so memory does not grow with the message.

mod auth;
mod command;
mod data;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::address::{Mailbox, ReversePath};
use crate::command::BodyType;
use crate::reply::Reply;
use crate::sasl::{Mechanism, Secret};

use command::{Command, LineError, MailCommand};
use data::DataDecoder;

/// How the listening side is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerSecurity {
    /// No TLS at all.
    Plaintext,
    /// Plaintext first; STARTTLS is offered (RFC 3207).
    StartTls,
    /// The driver completed a TLS handshake before creating the machine.
    ImplicitTls,
}

/// Server timeouts (RFC 5321 §4.5.3.2.7: at least 5 minutes while waiting
/// for the next command).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerTimeouts {
    /// Waiting for a command line, a SASL response or message content
    /// (5 min). Any input restarts it.
    pub command: Duration,
    /// From `220` to STARTTLS until the driver reports the handshake done
    /// (1 min).
    pub tls_handshake: Duration,
}

impl Default for ServerTimeouts {
    fn default() -> Self {
        ServerTimeouts {
            command: Duration::from_secs(300),
            tls_handshake: Duration::from_secs(60),
        }
    }
}

postern_common::setters!(ServerTimeouts {
    command: Duration,
    tls_handshake: Duration,
});

/// What the server offers and how much it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The name in the greeting and the EHLO reply (CR and LF removed).
    pub hostname: String,
    /// How the connection is secured.
    pub security: ServerSecurity,
    /// Offer AUTH on a connection without TLS. Only for a listener the
    /// embedding application knows is loopback; off by default, so AUTH is
    /// offered after STARTTLS or on implicit TLS only.
    pub plaintext_auth: bool,
    /// MAIL is refused (`530 5.7.0`) until AUTH succeeded (default on).
    pub require_auth: bool,
    /// Advertise PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// Advertise 8BITMIME (RFC 6152).
    pub eight_bit_mime: bool,
    /// Advertise SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// Advertise CHUNKING: BDAT (RFC 3030).
    pub chunking: bool,
    /// Advertise ENHANCEDSTATUSCODES (RFC 2034) and put them in the
    /// machine's own replies.
    pub enhanced_status_codes: bool,
    /// The largest message taken, in octets (advertised as `SIZE`). `None`
    /// for no limit (`SIZE` without a number).
    pub max_message_size: Option<u64>,
    /// Recipients per transaction (RFC 5321 §4.5.3.1.8: at least 100).
    pub max_recipients: usize,
    /// Failed AUTH attempts before the session is closed.
    pub max_auth_failures: u32,
    /// Refused commands (unknown, malformed, out of order) before the
    /// session is closed.
    pub max_bad_commands: u32,
    /// The longest command line, line end included (RFC 5321 §4.5.3.1.4:
    /// at least 512; SASL responses use the same bound).
    pub max_command_line: usize,
    /// The longest text line of message content, CRLF included (RFC 5321
    /// §4.5.3.1.6: 1000).
    pub max_text_line: usize,
    /// Input held while the application answers a question.
    pub max_buffered_input: usize,
    /// The largest [`ServerEvent::BodyChunk`].
    pub max_body_chunk: usize,
    /// Refuse message content with a NUL byte (`554 5.6.0`).
    pub refuse_nul: bool,
    /// Timeouts.
    pub timeouts: ServerTimeouts,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: "localhost".to_owned(),
            security: ServerSecurity::Plaintext,
            plaintext_auth: false,
            require_auth: true,
            pipelining: true,
            eight_bit_mime: true,
            smtputf8: true,
            chunking: true,
            enhanced_status_codes: true,
            max_message_size: Some(64 * 1024 * 1024),
            max_recipients: 100,
            max_auth_failures: 3,
            max_bad_commands: 10,
            max_command_line: 2048,
            max_text_line: 1000,
            max_buffered_input: 64 * 1024,
            max_body_chunk: 64 * 1024,
            refuse_nul: true,
            timeouts: ServerTimeouts::default(),
        }
    }
}

postern_common::setters!(ServerConfig {
    hostname: String,
    security: ServerSecurity,
    plaintext_auth: bool,
    require_auth: bool,
    pipelining: bool,
    eight_bit_mime: bool,
    smtputf8: bool,
    chunking: bool,
    enhanced_status_codes: bool,
    max_message_size: Option<u64>,
    max_recipients: usize,
    max_auth_failures: u32,
    max_bad_commands: u32,
    max_command_line: usize,
    max_text_line: usize,
    max_buffered_input: usize,
    max_body_chunk: usize,
    refuse_nul: bool,
    timeouts: ServerTimeouts,
});

/// Credentials a client presented with AUTH.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthRequest {
    /// PLAIN or LOGIN.
    pub mechanism: Mechanism,
    /// The PLAIN authorization identity, when the client gave one that
    /// differs from nothing.
    pub authzid: Option<String>,
    /// The user name.
    pub username: String,
    /// The password (redacted in `Debug`).
    pub password: Secret,
}

/// MAIL FROM as the client sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MailRequest {
    /// The reverse path.
    pub from: ReversePath,
    /// `SIZE=`, when declared.
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: BodyType,
    /// `SMTPUTF8` was given.
    pub smtputf8: bool,
}

/// What the machine is waiting for the application to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Question {
    /// [`ServerEvent::Authenticate`]: `235`, or a 4xx/5xx refusal.
    Authenticate,
    /// [`ServerEvent::Mail`]: 2xx, 4xx or 5xx.
    Mail,
    /// [`ServerEvent::Rcpt`]: 2xx, 4xx or 5xx.
    Rcpt,
    /// [`ServerEvent::Data`]: `354` to take the content, or a 4xx/5xx.
    Data,
    /// [`ServerEvent::MessageEnd`]: the verdict on the message.
    MessageEnd,
}

/// An event for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub enum ServerEvent {
    /// The client introduced itself (already answered).
    Hello {
        /// The name after EHLO/HELO, as sent (print it sanitized).
        name: String,
        /// EHLO rather than HELO.
        extended: bool,
    },
    /// `220` to STARTTLS is queued: write it out, then run the TLS
    /// handshake on the same socket and call
    /// [`Server::handle_tls_established`]. Read nothing in between.
    StartTls,
    /// Check these credentials; answer [`Question::Authenticate`].
    Authenticate(AuthRequest),
    /// A transaction starts; answer [`Question::Mail`].
    Mail(MailRequest),
    /// A recipient; answer [`Question::Rcpt`].
    Rcpt(Mailbox),
    /// The client wants to send the content (DATA, or the first BDAT when
    /// `chunking`); answer [`Question::Data`]: `354` to take it.
    Data {
        /// The content comes in BDAT chunks (the `354` is not sent then).
        chunking: bool,
    },
    /// Content bytes, dot-stuffing undone, line ends as the client sent
    /// them.
    BodyChunk(Vec<u8>),
    /// The machine refused the message it is reading (too big, a line too
    /// long, a NUL): stop relaying it. The reply goes to the client at the
    /// end of the content; no [`ServerEvent::MessageEnd`] follows.
    MessageRefused(Reply),
    /// The content is complete; answer [`Question::MessageEnd`] with the
    /// verdict.
    MessageEnd {
        /// Octets of content (un-stuffed).
        size: u64,
    },
    /// The open transaction was abandoned (RSET, EHLO, QUIT or STARTTLS):
    /// drop whatever was started for it.
    Reset,
    /// The session is over: after QUIT (`error` is `None`), on the client's
    /// EOF outside a transaction (`None`), or on a [`ServerError`]. Write
    /// out what [`Server::poll_transmit`] still holds, then close.
    Closed {
        /// Why, when the session failed.
        error: Option<ServerError>,
    },
}

/// A session the client broke. Sticky: every later input returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerError {
    /// Nothing came from the client in time.
    Timeout {
        /// What the server was waiting for.
        waiting_for: &'static str,
    },
    /// Bytes came after STARTTLS in plaintext (pipelined behind it, or
    /// before the handshake): possible command injection (CVE-2011-0411).
    PlaintextAfterStartTls,
    /// [`ServerConfig::max_bad_commands`] refused commands.
    TooManyBadCommands,
    /// [`ServerConfig::max_auth_failures`] failed AUTH attempts.
    TooManyAuthFailures,
    /// More than [`ServerConfig::max_buffered_input`] bytes were fed while
    /// a question was open.
    InputOverflow {
        /// The bound.
        limit: usize,
    },
    /// The client closed the connection inside a transaction.
    UnexpectedEof,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Timeout { waiting_for } => {
                write!(
                    f,
                    "the client sent nothing in time (waiting for {waiting_for})"
                )
            }
            ServerError::PlaintextAfterStartTls => {
                f.write_str("the client sent plaintext after STARTTLS (possible injection)")
            }
            ServerError::TooManyBadCommands => f.write_str("too many refused commands"),
            ServerError::TooManyAuthFailures => f.write_str("too many failed AUTH attempts"),
            ServerError::InputOverflow { limit } => {
                write!(
                    f,
                    "more than {limit} bytes of input held while a question was open"
                )
            }
            ServerError::UnexpectedEof => {
                f.write_str("the client closed the connection inside a transaction")
            }
        }
    }
}

impl std::error::Error for ServerError {}

/// An answer the machine cannot take; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerMisuse {
    /// No question is open.
    NothingAsked,
    /// The reply's code does not answer the open question.
    WrongReply {
        /// The open question.
        question: Question,
        /// The code given.
        code: u16,
    },
    /// [`Server::handle_tls_established`] without STARTTLS.
    NoTlsPending,
    /// The session is over.
    Closed,
}

impl fmt::Display for ServerMisuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerMisuse::NothingAsked => f.write_str("no question is open"),
            ServerMisuse::WrongReply { question, code } => {
                write!(f, "{code} does not answer {question:?}")
            }
            ServerMisuse::NoTlsPending => f.write_str("no STARTTLS handshake is pending"),
            ServerMisuse::Closed => f.write_str("the session is over"),
        }
    }
}

impl std::error::Error for ServerMisuse {}

/// A question with what the machine needs to act on its answer.
#[derive(Debug)]
enum Asked {
    Authenticate { username: String },
    Mail(MailRequest),
    Rcpt,
    Data { bdat: Option<(u64, bool)> },
    MessageEnd,
}

/// A SASL exchange waiting for the client's next line.
#[derive(Debug)]
enum SaslStep {
    Plain,
    LoginUser,
    LoginPassword { username: String },
}

#[derive(Debug)]
enum State {
    Command,
    /// A command line went over the limit: skipping to its LF.
    SkipLine,
    Asked(Asked),
    Sasl(SaslStep),
    Data(Box<DataDecoder>),
    Bdat {
        remaining: u64,
        last: bool,
        /// The reply to send instead of taking the chunk.
        refused: Option<Reply>,
    },
    TlsHandshake,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    None,
    Data,
    Bdat,
}

#[derive(Debug)]
struct Txn {
    smtputf8: bool,
    recipients: usize,
    accepted: usize,
    content: Content,
    /// A BDAT was refused: later chunks of the transaction get this reply.
    failed: Option<Reply>,
    /// The machine refused the message being read (sent at its end).
    refused: Option<Reply>,
    size: u64,
}

/// The server machine. See the [module documentation](self).
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    state: State,
    tls: bool,
    helo: Option<String>,
    user: Option<String>,
    txn: Option<Txn>,
    auth_failures: u32,
    bad_commands: u32,
    /// Input not yet processed.
    input: Vec<u8>,
    /// Bytes at the front of `input` known to hold no LF.
    scanned: usize,
    out: Vec<u8>,
    sent: usize,
    events: VecDeque<ServerEvent>,
    deadline: Option<(Instant, &'static str)>,
    error: Option<ServerError>,
}

impl Server {
    /// A session that starts now: the greeting is queued (on implicit TLS,
    /// create the machine after the handshake).
    #[must_use]
    pub fn new(mut config: ServerConfig, now: Instant) -> Self {
        config.hostname.retain(|c| !c.is_control());
        if config.hostname.is_empty() {
            config.hostname = "localhost".to_owned();
        }
        config.max_buffered_input = config.max_buffered_input.max(config.max_command_line);
        config.max_body_chunk = config.max_body_chunk.max(1);
        let mut server = Server {
            tls: config.security == ServerSecurity::ImplicitTls,
            config,
            state: State::Command,
            helo: None,
            user: None,
            txn: None,
            auth_failures: 0,
            bad_commands: 0,
            input: Vec::new(),
            scanned: 0,
            out: Vec::new(),
            sent: 0,
            events: VecDeque::new(),
            deadline: None,
            error: None,
        };
        let greeting = format!("{} ESMTP postern", server.config.hostname);
        server.say(220, "", &greeting);
        server.wait_for_client(now);
        server
    }

    /// Bytes to write to the client, if any.
    #[must_use]
    pub fn poll_transmit(&self) -> Option<&[u8]> {
        let pending = &self.out[self.sent..];
        (!pending.is_empty()).then_some(pending)
    }

    /// Marks `n` bytes of [`Server::poll_transmit`] as written.
    pub fn advance_transmit(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.out.len());
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When [`Server::handle_timeout`] is due. `None` while the application
    /// holds a question (its own timeouts apply) and after the session.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline.map(|(at, _)| at)
    }

    /// `true` while the machine reads input; `false` while a question is
    /// open, during the TLS handshake and after the session. A driver that
    /// reads only while this is `true` never overflows the input bound.
    #[must_use]
    pub fn wants_input(&self) -> bool {
        !matches!(
            self.state,
            State::Asked(_) | State::TlsHandshake | State::Closed
        )
    }

    /// The open question, if any.
    #[must_use]
    pub fn pending(&self) -> Option<Question> {
        match &self.state {
            State::Asked(Asked::Authenticate { .. }) => Some(Question::Authenticate),
            State::Asked(Asked::Mail(_)) => Some(Question::Mail),
            State::Asked(Asked::Rcpt) => Some(Question::Rcpt),
            State::Asked(Asked::Data { .. }) => Some(Question::Data),
            State::Asked(Asked::MessageEnd) => Some(Question::MessageEnd),
            _ => None,
        }
    }

    /// The user AUTH accepted, if any.
    #[must_use]
    pub fn authenticated(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// `true` when the connection is encrypted.
    #[must_use]
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The name the client gave in EHLO/HELO.
    #[must_use]
    pub fn client_name(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// `true` after [`ServerEvent::Closed`].
    #[must_use]
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Feeds bytes read from the client.
    pub fn handle_input(&mut self, now: Instant, input: &[u8]) -> Result<(), ServerError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.state {
            State::Closed => return Ok(()),
            State::TlsHandshake if !input.is_empty() => {
                return self.fail(ServerError::PlaintextAfterStartTls, None);
            }
            _ => {}
        }
        if self.deadline.is_some() {
            self.wait_for_client(now);
        }
        let mut buffer = std::mem::take(&mut self.input);
        let result = if buffer.is_empty() {
            let result = self.process(now, input);
            if let Ok(used) = result {
                buffer.extend_from_slice(&input[used..]);
            }
            result
        } else {
            buffer.extend_from_slice(input);
            let result = self.process(now, &buffer);
            if let Ok(used) = result {
                buffer.drain(..used);
            }
            result
        };
        result?;
        if self.is_closed() {
            return Ok(());
        }
        self.input = buffer;
        if self.input.len() > self.config.max_buffered_input {
            let limit = self.config.max_buffered_input;
            return self.fail(
                ServerError::InputOverflow { limit },
                Some((421, "4.7.0", "Too much pipelined input, closing")),
            );
        }
        Ok(())
    }

    /// The client closed its side.
    pub fn handle_eof(&mut self, _now: Instant) -> Result<(), ServerError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.is_closed() {
            return Ok(());
        }
        if self.txn.is_some() {
            return self.fail(ServerError::UnexpectedEof, None);
        }
        self.close(None);
        Ok(())
    }

    /// Call when [`Server::poll_timeout`] has passed; a no-op before.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ServerError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.deadline {
            Some((at, waiting_for)) if at <= now => self.fail(
                ServerError::Timeout { waiting_for },
                Some((421, "4.4.2", "Timeout, closing connection")),
            ),
            _ => Ok(()),
        }
    }

    /// The TLS handshake after [`ServerEvent::StartTls`] is done. The
    /// session starts over (RFC 3207 §4.2): the client must send EHLO
    /// again, and nothing learnt before TLS is kept.
    pub fn handle_tls_established(&mut self, now: Instant) -> Result<(), ServerMisuse> {
        if !matches!(self.state, State::TlsHandshake) {
            return Err(ServerMisuse::NoTlsPending);
        }
        self.tls = true;
        self.helo = None;
        self.user = None;
        self.txn = None;
        self.state = State::Command;
        self.wait_for_client(now);
        Ok(())
    }

    /// Answers the open question with the standard positive reply
    /// (`235`, `250`, `250`, `354`, `250`).
    pub fn accept(&mut self, now: Instant) -> Result<(), ServerMisuse> {
        let (code, enhanced, text) = match self.pending().ok_or(ServerMisuse::NothingAsked)? {
            Question::Authenticate => (235, "2.7.0", "Authentication successful"),
            Question::Mail => (250, "2.1.0", "Sender OK"),
            Question::Rcpt => (250, "2.1.5", "Recipient OK"),
            Question::Data => (354, "", "End data with <CR><LF>.<CR><LF>"),
            Question::MessageEnd => (250, "2.0.0", "Message accepted"),
        };
        let reply = self.reply(code, enhanced, text);
        self.answer(now, reply)
    }

    /// Answers the open question with `reply` (its text is sent as given:
    /// use [`Reply::relayable`] for text from elsewhere). Processing then
    /// resumes with any input already held.
    pub fn answer(&mut self, now: Instant, reply: Reply) -> Result<(), ServerMisuse> {
        let question = self.pending().ok_or(if self.is_closed() {
            ServerMisuse::Closed
        } else {
            ServerMisuse::NothingAsked
        })?;
        let class = reply.class();
        let fits = match question {
            Question::Authenticate => reply.code() == 235 || class >= 4,
            Question::Mail | Question::Rcpt | Question::MessageEnd => class != 3,
            Question::Data => reply.code() == 354 || class >= 4,
        };
        if !fits {
            return Err(ServerMisuse::WrongReply {
                question,
                code: reply.code(),
            });
        }
        let State::Asked(asked) = std::mem::replace(&mut self.state, State::Command) else {
            return Err(ServerMisuse::NothingAsked);
        };
        let positive = class <= 3;
        match asked {
            Asked::Authenticate { username } => {
                reply.write_wire(&mut self.out);
                if positive {
                    self.user = Some(username);
                } else {
                    self.auth_failures += 1;
                    if self.auth_failures >= self.config.max_auth_failures {
                        let _ = self.fail(
                            ServerError::TooManyAuthFailures,
                            Some((421, "4.7.0", "Too many failed authentications, closing")),
                        );
                        return Ok(());
                    }
                }
            }
            Asked::Mail(mail) => {
                reply.write_wire(&mut self.out);
                if positive {
                    self.txn = Some(Txn {
                        smtputf8: mail.smtputf8,
                        recipients: 0,
                        accepted: 0,
                        content: Content::None,
                        failed: None,
                        refused: None,
                        size: 0,
                    });
                }
            }
            Asked::Rcpt => {
                reply.write_wire(&mut self.out);
                if let Some(txn) = &mut self.txn {
                    txn.recipients += 1;
                    txn.accepted += usize::from(positive);
                }
            }
            Asked::Data { bdat: None } => {
                reply.write_wire(&mut self.out);
                if positive {
                    if let Some(txn) = &mut self.txn {
                        txn.content = Content::Data;
                    }
                    let max_line = self.config.max_text_line.saturating_sub(2);
                    self.state = State::Data(Box::new(DataDecoder::new(max_line)));
                }
            }
            Asked::Data {
                bdat: Some((remaining, last)),
            } => {
                if let Some(txn) = &mut self.txn {
                    txn.content = Content::Bdat;
                    if !positive && !last {
                        txn.failed = Some(reply.clone());
                    }
                }
                self.state = State::Bdat {
                    remaining,
                    last,
                    refused: (!positive).then_some(reply),
                };
            }
            Asked::MessageEnd => {
                reply.write_wire(&mut self.out);
                self.txn = None;
            }
        }
        self.wait_for_client(now);
        self.resume(now);
        Ok(())
    }

    /// Processes input held while a question was open.
    fn resume(&mut self, now: Instant) {
        if self.input.is_empty() || !self.wants_input() {
            return;
        }
        let buffer = std::mem::take(&mut self.input);
        if let Ok(used) = self.process(now, &buffer)
            && !self.is_closed()
        {
            self.input = buffer[used..].to_vec();
        }
    }

    /// Runs the machine over `buffer`; returns the bytes taken.
    fn process(&mut self, now: Instant, buffer: &[u8]) -> Result<usize, ServerError> {
        let mut pos = 0;
        loop {
            let rest = &buffer[pos..];
            match &mut self.state {
                State::Asked(_) | State::TlsHandshake | State::Closed => return Ok(pos),
                State::Data(decoder) => {
                    if rest.is_empty() {
                        return Ok(pos);
                    }
                    let take = rest.len().min(self.config.max_body_chunk);
                    let mut chunk = Vec::with_capacity(take);
                    let (used, end) = decoder.decode(&rest[..take], &mut chunk);
                    let (size, long_line, nul) = (decoder.size, decoder.long_line, decoder.nul);
                    pos += used;
                    self.content(chunk, size, long_line, nul && self.config.refuse_nul);
                    if end {
                        self.end_of_message(size);
                    }
                }
                State::Bdat {
                    remaining,
                    last,
                    refused,
                } => {
                    if *remaining == 0 {
                        let (last, refused) = (*last, refused.take());
                        self.state = State::Command;
                        self.end_of_chunk(last, refused);
                        continue;
                    }
                    if rest.is_empty() {
                        return Ok(pos);
                    }
                    let max = usize::try_from(*remaining).unwrap_or(usize::MAX);
                    let take = rest.len().min(max).min(self.config.max_body_chunk);
                    *remaining -= take as u64;
                    let discard = refused.is_some();
                    pos += take;
                    if !discard {
                        let size = self.txn.as_ref().map_or(0, |t| t.size) + take as u64;
                        self.content(rest[..take].to_vec(), size, false, false);
                    }
                }
                State::SkipLine => match memchr::memchr(b'\n', rest) {
                    None => return Ok(buffer.len()),
                    Some(lf) => {
                        pos += lf + 1;
                        self.state = State::Command;
                    }
                },
                State::Command | State::Sasl(_) => {
                    let from = if pos == 0 { self.scanned } else { 0 };
                    let Some(lf) = rest.get(from..).and_then(|r| memchr::memchr(b'\n', r)) else {
                        if rest.len() > self.config.max_command_line {
                            self.state = State::SkipLine;
                            self.scanned = 0;
                            self.say(500, "5.5.6", "Line too long");
                            self.bad_command()?;
                            return Ok(buffer.len());
                        }
                        self.scanned = rest.len();
                        return Ok(pos);
                    };
                    let lf = from + lf;
                    self.scanned = 0;
                    let line = &rest[..lf];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    pos += lf + 1;
                    if line.len() + 2 > self.config.max_command_line {
                        self.say(500, "5.5.6", "Line too long");
                        self.bad_command()?;
                        continue;
                    }
                    let more = pos < buffer.len();
                    if matches!(self.state, State::Sasl(_)) {
                        self.sasl_line(line)?;
                    } else {
                        self.command_line(now, line, more)?;
                    }
                }
            }
        }
    }

    /// Hands content to the application unless the message is refused,
    /// and refuses it when it breaks a bound.
    fn content(&mut self, chunk: Vec<u8>, size: u64, long_line: bool, nul: bool) {
        let Some(txn) = &mut self.txn else {
            return;
        };
        txn.size = size;
        if txn.refused.is_some() {
            return;
        }
        let too_big = self.config.max_message_size.is_some_and(|max| size > max);
        let refusal = if too_big {
            Some((552, "5.3.4", "Message too big"))
        } else if long_line {
            Some((554, "5.6.0", "Message has a line too long"))
        } else if nul {
            Some((554, "5.6.0", "Message has a NUL byte"))
        } else {
            None
        };
        match refusal {
            Some((code, enhanced, text)) => {
                let reply = self.reply(code, enhanced, text);
                self.events
                    .push_back(ServerEvent::MessageRefused(reply.clone()));
                if let Some(txn) = &mut self.txn {
                    txn.refused = Some(reply);
                }
            }
            None if !chunk.is_empty() => self.events.push_back(ServerEvent::BodyChunk(chunk)),
            None => {}
        }
    }

    /// The content ended (after DATA, or with BDAT LAST).
    fn end_of_message(&mut self, size: u64) {
        self.state = State::Command;
        let refused = self.txn.as_mut().and_then(|t| t.refused.take());
        match refused {
            Some(reply) => {
                reply.write_wire(&mut self.out);
                self.txn = None;
            }
            None => {
                self.events.push_back(ServerEvent::MessageEnd { size });
                self.ask(Asked::MessageEnd);
            }
        }
    }

    /// A BDAT chunk was read whole.
    fn end_of_chunk(&mut self, last: bool, refused: Option<Reply>) {
        if let Some(reply) = refused {
            reply.write_wire(&mut self.out);
            if last {
                self.txn = None;
            }
            return;
        }
        if last {
            let size = self.txn.as_ref().map_or(0, |t| t.size);
            self.end_of_message(size);
        } else if let Some(reply) = self.txn.as_ref().and_then(|t| t.refused.clone()) {
            // Too big: every chunk from here on is refused.
            reply.write_wire(&mut self.out);
        } else {
            let size = self.txn.as_ref().map_or(0, |t| t.size);
            self.say(250, "2.0.0", &format!("{size} octets received"));
        }
    }

    fn command_line(&mut self, now: Instant, line: &[u8], more: bool) -> Result<(), ServerError> {
        let command = match command::parse(line) {
            Ok(command) => command,
            Err(e) => {
                match e {
                    LineError::Unknown => self.say(500, "5.5.2", "Command not recognized"),
                    LineError::Syntax(expected) => {
                        self.say(501, "5.5.4", &format!("Syntax: {expected}"));
                    }
                    LineError::Address { recipient: false } => {
                        self.say(553, "5.1.7", "Sender address not valid");
                    }
                    LineError::Address { recipient: true } => {
                        self.say(553, "5.1.3", "Recipient address not valid");
                    }
                    LineError::Parameter => self.say(555, "5.5.4", "Parameter not supported"),
                }
                return self.bad_command();
            }
        };
        match command {
            Command::Ehlo(name) => self.hello(name, true),
            Command::Helo(name) => self.hello(name, false),
            Command::StartTls => {
                if self.tls {
                    self.say(503, "5.5.1", "TLS already active");
                    return self.bad_command();
                }
                if self.config.security != ServerSecurity::StartTls {
                    self.say(502, "5.5.1", "STARTTLS not offered");
                    return self.bad_command();
                }
                if more {
                    return self.fail(
                        ServerError::PlaintextAfterStartTls,
                        Some((421, "4.7.0", "Commands pipelined after STARTTLS, closing")),
                    );
                }
                self.reset();
                self.say(220, "2.0.0", "Ready to start TLS");
                self.state = State::TlsHandshake;
                self.deadline = Some((now + self.config.timeouts.tls_handshake, "TLS handshake"));
                self.events.push_back(ServerEvent::StartTls);
            }
            Command::Auth { mechanism, initial } => return self.auth(&mechanism, initial),
            Command::Mail(mail) => return self.mail(mail),
            Command::Rcpt(mailbox) => return self.rcpt(mailbox),
            Command::Data => {
                let verdict = match &self.txn {
                    None => Err((503, "5.5.1", "MAIL first")),
                    Some(t) if t.accepted == 0 => Err((554, "5.5.1", "No valid recipients")),
                    Some(t) if t.content == Content::Bdat => Err((503, "5.5.1", "DATA after BDAT")),
                    Some(_) => Ok(()),
                };
                if let Err((code, enhanced, text)) = verdict {
                    self.say(code, enhanced, text);
                    return self.bad_command();
                }
                self.events.push_back(ServerEvent::Data { chunking: false });
                self.ask(Asked::Data { bdat: None });
            }
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.reset();
                self.say(250, "2.0.0", "OK");
            }
            Command::Noop => self.say(250, "2.0.0", "OK"),
            Command::Vrfy => self.say(252, "2.5.0", "Cannot VRFY user, but will accept message"),
            Command::Expn => self.say(502, "5.5.1", "EXPN not available"),
            Command::Help => self.say(214, "2.0.0", "See RFC 5321"),
            Command::Quit => {
                self.reset();
                let text = format!("{} closing connection", self.config.hostname);
                self.say(221, "2.0.0", &text);
                self.close(None);
            }
        }
        Ok(())
    }

    fn hello(&mut self, name: String, extended: bool) {
        self.reset();
        self.helo_reply(extended);
        self.helo = Some(name.clone());
        self.events.push_back(ServerEvent::Hello { name, extended });
    }

    /// AUTH is offered on this connection.
    fn auth_offered(&self) -> bool {
        self.tls || self.config.plaintext_auth
    }

    fn helo_reply(&mut self, extended: bool) {
        let host = self.config.hostname.clone();
        if !extended {
            self.say(250, "", &host);
            return;
        }
        let c = &self.config;
        let mut lines = vec![host];
        if c.pipelining {
            lines.push("PIPELINING".into());
        }
        lines.push(match c.max_message_size {
            Some(max) => format!("SIZE {max}"),
            None => "SIZE".into(),
        });
        if c.eight_bit_mime {
            lines.push("8BITMIME".into());
        }
        if c.smtputf8 {
            lines.push("SMTPUTF8".into());
        }
        if c.enhanced_status_codes {
            lines.push("ENHANCEDSTATUSCODES".into());
        }
        if c.chunking {
            lines.push("CHUNKING".into());
        }
        if c.security == ServerSecurity::StartTls && !self.tls {
            lines.push("STARTTLS".into());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        if let Some(reply) = Reply::new(250, &lines) {
            reply.write_wire(&mut self.out);
        }
    }

    fn auth(&mut self, mechanism: &str, initial: Option<String>) -> Result<(), ServerError> {
        let refusal = if self.helo.is_none() {
            Some((503, "5.5.1", "EHLO first"))
        } else if !self.auth_offered() {
            Some((
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            ))
        } else if self.user.is_some() {
            Some((503, "5.5.1", "Already authenticated"))
        } else if self.txn.is_some() {
            Some((503, "5.5.1", "Not during a mail transaction"))
        } else {
            None
        };
        if let Some((code, enhanced, text)) = refusal {
            self.say(code, enhanced, text);
            return self.bad_command();
        }
        match (mechanism, initial) {
            ("PLAIN", Some(initial)) => self.sasl_plain(&initial),
            ("PLAIN", None) => {
                self.say(334, "", "");
                self.state = State::Sasl(SaslStep::Plain);
                Ok(())
            }
            ("LOGIN", Some(user)) => self.sasl_login_user(&user),
            ("LOGIN", None) => {
                self.say(334, "", auth::LOGIN_USER_PROMPT);
                self.state = State::Sasl(SaslStep::LoginUser);
                Ok(())
            }
            _ => {
                self.say(504, "5.5.4", "Unrecognized authentication type");
                self.bad_command()
            }
        }
    }

    fn sasl_line(&mut self, line: &[u8]) -> Result<(), ServerError> {
        let State::Sasl(step) = std::mem::replace(&mut self.state, State::Command) else {
            return Ok(());
        };
        let Ok(line) = std::str::from_utf8(line) else {
            return self.sasl_refused();
        };
        if line == "*" {
            self.say(501, "5.0.0", "Authentication cancelled");
            return Ok(());
        }
        match step {
            SaslStep::Plain => self.sasl_plain(line),
            SaslStep::LoginUser => self.sasl_login_user(line),
            SaslStep::LoginPassword { username } => match auth::login_field(line) {
                Ok(password) => {
                    self.ask_auth(AuthRequest {
                        mechanism: Mechanism::Login,
                        authzid: None,
                        username,
                        password: Secret::new(password),
                    });
                    Ok(())
                }
                Err(_) => self.sasl_refused(),
            },
        }
    }

    fn sasl_plain(&mut self, response: &str) -> Result<(), ServerError> {
        match auth::plain(response) {
            Ok(p) => {
                self.ask_auth(AuthRequest {
                    mechanism: Mechanism::Plain,
                    authzid: p.authzid,
                    username: p.username,
                    password: p.password,
                });
                Ok(())
            }
            Err(_) => self.sasl_refused(),
        }
    }

    fn sasl_login_user(&mut self, response: &str) -> Result<(), ServerError> {
        match auth::login_field(response) {
            Ok(username) if !username.is_empty() => {
                self.say(334, "", auth::LOGIN_PASSWORD_PROMPT);
                self.state = State::Sasl(SaslStep::LoginPassword { username });
                Ok(())
            }
            _ => self.sasl_refused(),
        }
    }

    fn sasl_refused(&mut self) -> Result<(), ServerError> {
        self.state = State::Command;
        self.say(501, "5.5.2", "Cannot decode the AUTH response");
        self.bad_command()
    }

    fn ask_auth(&mut self, request: AuthRequest) {
        let username = request.username.clone();
        self.events.push_back(ServerEvent::Authenticate(request));
        self.ask(Asked::Authenticate { username });
    }

    fn mail(&mut self, mail: MailCommand) -> Result<(), ServerError> {
        let c = &self.config;
        let too_big = matches!((mail.size, c.max_message_size), (Some(s), Some(max)) if s > max);
        let refusal = if self.helo.is_none() {
            Some((503, "5.5.1", "EHLO or HELO first"))
        } else if c.require_auth && self.user.is_none() {
            if c.security == ServerSecurity::StartTls && !self.tls {
                Some((530, "5.7.0", "Must issue a STARTTLS command first"))
            } else {
                Some((530, "5.7.0", "Authentication required"))
            }
        } else if self.txn.is_some() {
            Some((503, "5.5.1", "Nested MAIL command"))
        } else if too_big {
            Some((552, "5.3.4", "Message size exceeds fixed limit"))
        } else if (mail.body == BodyType::EightBitMime && !c.eight_bit_mime)
            || mail.body == BodyType::BinaryMime
            || (mail.smtputf8 && !c.smtputf8)
        {
            Some((555, "5.5.4", "Parameter not supported"))
        } else if mail.from.needs_smtputf8() && !mail.smtputf8 {
            Some((553, "5.6.7", "Non-ASCII address needs SMTPUTF8"))
        } else {
            None
        };
        if let Some((code, enhanced, text)) = refusal {
            self.say(code, enhanced, text);
            return self.bad_command();
        }
        let request = MailRequest {
            from: mail.from,
            size: mail.size,
            body: mail.body,
            smtputf8: mail.smtputf8,
        };
        self.events.push_back(ServerEvent::Mail(request.clone()));
        self.ask(Asked::Mail(request));
        Ok(())
    }

    fn rcpt(&mut self, mailbox: Mailbox) -> Result<(), ServerError> {
        let refusal = match &self.txn {
            None => Some((503, "5.5.1", "MAIL first")),
            Some(t) if t.recipients >= self.config.max_recipients => {
                Some((452, "4.5.3", "Too many recipients"))
            }
            Some(t) if mailbox.needs_smtputf8() && !t.smtputf8 => {
                Some((553, "5.6.7", "Non-ASCII address needs SMTPUTF8"))
            }
            Some(t) if t.content != Content::None => Some((503, "5.5.1", "RCPT after content")),
            Some(_) => None,
        };
        if let Some((code, enhanced, text)) = refusal {
            self.say(code, enhanced, text);
            if code == 452 {
                return Ok(());
            }
            return self.bad_command();
        }
        self.events.push_back(ServerEvent::Rcpt(mailbox));
        self.ask(Asked::Rcpt);
        Ok(())
    }

    /// BDAT: the chunk is always read (RFC 3030 §2), taken or discarded.
    fn bdat(&mut self, size: u64, last: bool) {
        let c = &self.config;
        let refusal = match &self.txn {
            _ if !c.chunking => Some((502, "5.5.1", "BDAT not offered")),
            None => Some((503, "5.5.1", "MAIL first")),
            Some(t) if t.accepted == 0 => Some((554, "5.5.1", "No valid recipients")),
            Some(t) if t.content == Content::Data => Some((503, "5.5.1", "BDAT after DATA")),
            Some(_) => None,
        };
        let refused = match refusal {
            Some((code, enhanced, text)) => {
                self.bad_commands += 1;
                Some(self.reply(code, enhanced, text))
            }
            None => self.txn.as_ref().and_then(|t| t.failed.clone()),
        };
        if refused.is_none()
            && self
                .txn
                .as_ref()
                .is_some_and(|t| t.content == Content::None)
        {
            self.events.push_back(ServerEvent::Data { chunking: true });
            self.ask(Asked::Data {
                bdat: Some((size, last)),
            });
            return;
        }
        self.state = State::Bdat {
            remaining: size,
            last,
            refused,
        };
    }

    /// Drops the open transaction, telling the application.
    fn reset(&mut self) {
        if self.txn.take().is_some() {
            self.events.push_back(ServerEvent::Reset);
        }
    }

    fn ask(&mut self, asked: Asked) {
        self.state = State::Asked(asked);
        self.deadline = None;
    }

    fn wait_for_client(&mut self, now: Instant) {
        let waiting_for = match self.state {
            State::Data(_) | State::Bdat { .. } => "message content",
            State::Sasl(_) => "an AUTH response",
            State::Asked(_) | State::TlsHandshake | State::Closed => return,
            State::Command | State::SkipLine => "a command",
        };
        self.deadline = Some((now + self.config.timeouts.command, waiting_for));
    }

    fn bad_command(&mut self) -> Result<(), ServerError> {
        self.bad_commands += 1;
        if self.bad_commands >= self.config.max_bad_commands {
            return self.fail(
                ServerError::TooManyBadCommands,
                Some((421, "4.7.0", "Too many errors, closing")),
            );
        }
        Ok(())
    }

    /// A reply from the machine itself (enhanced code left out when not
    /// offered).
    fn reply(&self, code: u16, enhanced: &str, text: &str) -> Reply {
        let line = if enhanced.is_empty() || !self.config.enhanced_status_codes {
            text.to_owned()
        } else {
            format!("{enhanced} {text}")
        };
        Reply::new(code, &[line]).unwrap_or_else(|| {
            Reply::new(451, &["4.3.0 Internal error"]).expect("a constant reply is valid")
        })
    }

    fn say(&mut self, code: u16, enhanced: &str, text: &str) {
        self.reply(code, enhanced, text).write_wire(&mut self.out);
    }

    fn close(&mut self, error: Option<ServerError>) {
        self.state = State::Closed;
        self.deadline = None;
        self.input.clear();
        self.events.push_back(ServerEvent::Closed { error });
    }

    fn fail(
        &mut self,
        error: ServerError,
        reply: Option<(u16, &str, &str)>,
    ) -> Result<(), ServerError> {
        if let Some((code, enhanced, text)) = reply {
            self.say(code, enhanced, text);
        }
        if self.txn.take().is_some() {
            self.events.push_back(ServerEvent::Reset);
        }
        self.error = Some(error.clone());
        self.close(Some(error.clone()));
        Err(error)
    }
}
