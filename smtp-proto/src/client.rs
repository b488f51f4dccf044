//! The client state machine: every transition of the SMTP dialogue is in this
//! file.

use std::collections::VecDeque;
use std::fmt;
use std::time::Instant;

use crate::address::ClientName;
use crate::body::{BodyEncoder, BodyStats, LongLines, NulBytes};
use crate::command::{self, Envelope, Plan};
use crate::diagnose::classify_auth;
use crate::ehlo::Capabilities;
use crate::error::{CommandError, Error};
use crate::event::{
    AbandonReason, AuthFailure, Event, RecipientResult, SessionEnd, TransactionId,
    TransactionReport,
};
use crate::reply::{Reply, ReplyLimits, ReplyParser};
use crate::sasl::{self, Credentials, Mechanism, Responses, SecretBytes, ServerIdentity};
use crate::security::Security;
use crate::timer::{Phase, Timeouts, Timer};

/// Settings of a [`Client`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// TLS policy; default [`Security::StartTls`].
    pub tls: Security,
    /// The name sent in EHLO/HELO; default `[127.0.0.1]`.
    pub ehlo_name: ClientName,
    /// Host and port of the server, put in OAUTHBEARER messages.
    pub server: ServerIdentity,
    /// Per-phase timeouts.
    pub timeouts: Timeouts,
    /// Reply parser limits.
    pub reply_limits: ReplyLimits,
    /// Send credentials over an unencrypted connection. Off by default; only for
    /// loopback tests or networks the user controls.
    pub dangerous_allow_credentials_without_tls: bool,
    /// Use BDAT when the server offers CHUNKING and PIPELINING; default `true`.
    pub use_chunking: bool,
    /// Policy for lines over 998 octets in the body.
    pub long_lines: LongLines,
    /// Policy for NUL bytes in the body.
    pub nul: NulBytes,
    /// How many error challenges (a `334` after the client's response) one AUTH
    /// answers before cancelling with `*`; default 1.
    pub max_auth_challenges: u8,
    /// Body bytes accepted by [`Client::write_body`] stop when this many bytes wait
    /// for transmission; default 256 KiB. The transmit buffer holds at most
    /// this plus one command group (MAIL and all RCPT lines).
    pub max_pending_body: usize,
    /// Pipelining across transactions (RFC 2920 §3.1): [`Client::send_envelope`]
    /// may start the next transaction right after a message's final `.`,
    /// before that message's reply, when the server offers PIPELINING. The
    /// replies are matched to their transactions in order; a refused message
    /// does not change the next one's verdict. With it on, messages go with
    /// DATA even where CHUNKING is offered (binary bodies still need BDAT):
    /// a BDAT message is never overtaken, because a refused chunk needs an
    /// RSET first, and Dovecot 2.3's submission server fails an assertion
    /// on a MAIL pipelined after `BDAT ... LAST`. Default `false`; also
    /// [`Client::set_pipeline_transactions`].
    pub pipeline_transactions: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            tls: Security::default(),
            ehlo_name: ClientName::default(),
            server: ServerIdentity::default(),
            timeouts: Timeouts::default(),
            reply_limits: ReplyLimits::default(),
            dangerous_allow_credentials_without_tls: false,
            use_chunking: true,
            long_lines: LongLines::Reject,
            nul: NulBytes::Reject,
            max_auth_challenges: 1,
            max_pending_body: 256 * 1024,
            pipeline_transactions: false,
        }
    }
}

/// AUTH progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AuthStep {
    /// `AUTH M` sent without initial response; the response follows the `334`.
    AwaitContinue,
    /// The (first) response was sent.
    SentFirst,
    /// LOGIN's password was sent.
    SentSecond,
    /// An error challenge was acknowledged; the final reply follows.
    SentErrorAck,
    /// `*` was sent.
    Cancelled,
}

#[derive(Debug)]
struct AuthState {
    mechanism: Mechanism,
    step: AuthStep,
    responses: Responses,
    challenges: u8,
    challenge: Option<Vec<u8>>,
}

/// A reply the transaction waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Mail,
    Rcpt(usize),
    Data,
    Bdat,
    /// After `.` or `BDAT ... LAST`.
    MessageEnd,
    /// After the lone `.` sent when DATA got `354` with no accepted recipient.
    EmptyData,
}

impl Expect {
    fn phase(self) -> Phase {
        match self {
            Expect::Mail => Phase::Mail,
            Expect::Rcpt(_) => Phase::Rcpt,
            Expect::Data => Phase::DataInit,
            Expect::Bdat => Phase::DataBlock,
            Expect::MessageEnd | Expect::EmptyData => Phase::DataEnd,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// MAIL, RCPT, DATA replies.
    Envelope,
    /// The caller writes the body.
    Body,
    /// The end of the message was sent; waiting for the final reply.
    Finishing,
    /// A BDAT failed: reading the replies still outstanding, then RSET.
    Draining,
}

#[derive(Debug)]
struct Txn {
    report: TransactionReport,
    envelope: Envelope,
    pipelining: bool,
    chunking: bool,
    expect: VecDeque<Expect>,
    /// Without pipelining: the next recipient to send (DATA after the last).
    next_rcpt: usize,
    stage: Stage,
    encoder: BodyEncoder,
    /// With BDAT: the encoded piece not yet sent, held back so that the last
    /// piece can go as `BDAT n LAST` (one chunk for a message written in one
    /// piece). At most one `write_body` call's worth.
    held: Vec<u8>,
    /// Opened with [`Client::open_transaction`] and not yet closed: more
    /// recipients may come, and the body waits for
    /// [`Client::close_envelope`].
    open: bool,
    /// [`Client::abandon_envelope`] was called: RSET once the outstanding
    /// replies are in.
    abandoned: bool,
    /// MAIL carried SMTPUTF8.
    smtputf8: bool,
    /// Started with [`Client::open_transaction`]: MAIL and RCPT replies are
    /// reported one by one.
    stepwise: bool,
}

#[derive(Debug)]
enum State {
    Greeting,
    Ehlo {
        helo: bool,
    },
    StartTls,
    TlsHandshake,
    Ready,
    Auth(Box<AuthState>),
    Txn(Box<Txn>),
    /// RSET sent; `report` is the failed transaction to report once it completes,
    /// `None` for an RSET the caller asked for.
    Rset {
        report: Option<Box<TransactionReport>>,
    },
    Noop,
    Quit,
    Closed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Greeting => "waiting for the greeting",
            State::Ehlo { .. } => "waiting for the EHLO reply",
            State::StartTls => "waiting for the STARTTLS reply",
            State::TlsHandshake => "waiting for the TLS handshake",
            State::Ready => "ready",
            State::Auth(_) => "authenticating",
            State::Txn(_) => "in a mail transaction",
            State::Rset { .. } => "waiting for the RSET reply",
            State::Noop => "waiting for the NOOP reply",
            State::Quit => "quitting",
            State::Closed => "closed",
        }
    }
}

/// The transaction of `state` when it takes body data.
/// The transaction of [`Client::open_transaction`], while it is open.
fn open_txn(state: &mut State) -> Result<&mut Txn, CommandError> {
    let name = state.name();
    match state {
        State::Txn(txn) if txn.open && txn.stage == Stage::Envelope => Ok(txn),
        State::Txn(_) => Err(CommandError::NotReady {
            state: "the transaction's envelope is not open",
        }),
        _ => Err(CommandError::NotReady { state: name }),
    }
}

fn body_txn(state: &mut State) -> Result<&mut Txn, CommandError> {
    let name = state.name();
    match state {
        State::Txn(txn) if txn.stage == Stage::Body => Ok(txn),
        State::Txn(_) => Err(CommandError::NotReady {
            state: "the transaction is not accepting body data",
        }),
        _ => Err(CommandError::NotReady { state: name }),
    }
}

/// The sans-IO SMTP client. See the crate documentation for the driver contract.
pub struct Client {
    config: ClientConfig,
    state: State,
    parser: ReplyParser,
    out: Vec<u8>,
    sent: usize,
    scratch: Vec<u8>,
    events: VecDeque<Event>,
    timer: Timer,
    caps: Option<Capabilities>,
    greeting: Option<Reply>,
    tls: bool,
    authenticated: Option<Mechanism>,
    error: Option<Error>,
    next_txn: u64,
    /// Transactions whose end (`.` or `BDAT ... LAST`) went out and whose
    /// reply has not come, oldest first; survives a fatal error.
    unconfirmed: VecDeque<TransactionId>,
    /// Transactions overtaken by a newer one (pipelining across
    /// transactions): their final `.` went out, their reply is the next to
    /// come, oldest first.
    finishing: VecDeque<Box<Txn>>,
}

impl fmt::Debug for Client {
    /// Shows the state only: the transmit buffer may hold credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state.name())
            .field("tls", &self.tls)
            .field("authenticated", &self.authenticated)
            .field("pending_transmit", &(self.out.len() - self.sent))
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for a connection that has just been opened (and, with
    /// [`Security::ImplicitTls`], whose TLS handshake is done). It waits for the
    /// greeting; its first deadline is `now + timeouts.greeting`.
    #[must_use]
    pub fn new(config: ClientConfig, now: Instant) -> Self {
        let mut client = Client {
            tls: config.tls == Security::ImplicitTls,
            parser: ReplyParser::new(config.reply_limits),
            config,
            state: State::Greeting,
            out: Vec::new(),
            sent: 0,
            scratch: Vec::new(),
            events: VecDeque::new(),
            timer: Timer::default(),
            caps: None,
            greeting: None,
            authenticated: None,
            error: None,
            next_txn: 0,
            unconfirmed: VecDeque::new(),
            finishing: VecDeque::new(),
        };
        client.enter(now, State::Greeting);
        client
    }

    // ---- outputs -------------------------------------------------------------

    /// Bytes to write to the connection, or `None` when there are none. After
    /// writing `n` of them, call [`Client::advance_transmit`]. Nothing is
    /// returned after a fatal error.
    #[must_use]
    pub fn poll_transmit(&self) -> Option<&[u8]> {
        (self.sent < self.out.len()).then(|| &self.out[self.sent..])
    }

    /// Marks `n` bytes of [`Client::poll_transmit`] as written. `n` larger than
    /// what is pending is clamped.
    pub fn advance_transmit(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.out.len());
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        } else if self.sent > 64 * 1024 && self.sent > self.out.len() / 2 {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
    }

    /// The next event, in the order they happened.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Client::handle_timeout`] must be called next, if a deadline is set.
    /// After a timer fired this is never at or before that `now` again.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.error.is_some() {
            return None;
        }
        self.timer.deadline()
    }

    // ---- inputs --------------------------------------------------------------

    /// Hands over bytes read from the connection. Every byte read must be passed,
    /// in order, with nothing buffered in between.
    pub fn handle_input(&mut self, now: Instant, mut input: &[u8]) -> Result<(), Error> {
        self.check_alive()?;
        while !input.is_empty() {
            match self.state {
                State::TlsHandshake => return self.fail(Error::PlaintextAfterStartTls),
                // Bytes after the reply to QUIT do not matter any more.
                State::Closed => return Ok(()),
                _ => {}
            }
            let (n, reply) = match self.parser.parse(input) {
                Ok(r) => r,
                Err(error) => {
                    let phase = self.phase();
                    return self.fail(Error::Reply { phase, error });
                }
            };
            input = &input[n..];
            if let Some(reply) = reply {
                self.on_reply(now, reply)?;
            }
        }
        Ok(())
    }

    /// The connection reached end of file (the server closed it).
    pub fn handle_eof(&mut self, _now: Instant) -> Result<(), Error> {
        self.check_alive()?;
        match self.state {
            State::Closed => Ok(()),
            State::Quit => {
                self.close(None);
                Ok(())
            }
            _ => {
                let phase = self.phase();
                self.fail(Error::ConnectionClosed { phase })
            }
        }
    }

    /// Call when [`Client::poll_timeout`] has passed. Does nothing when no
    /// deadline has expired.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        self.check_alive()?;
        match self.timer.expired(now) {
            Some(phase) => self.fail(Error::Timeout { phase }),
            None => Ok(()),
        }
    }

    /// The TLS handshake the driver started after [`Event::StartTls`] succeeded.
    /// The client forgets the plaintext capabilities and sends EHLO again.
    pub fn handle_tls_established(&mut self, now: Instant) -> Result<(), CommandError> {
        self.check_command()?;
        if !matches!(self.state, State::TlsHandshake) {
            return Err(CommandError::NotReady {
                state: self.state.name(),
            });
        }
        self.tls = true;
        self.caps = None;
        command::write_ehlo(&mut self.out, &self.config.ehlo_name);
        self.enter(now, State::Ehlo { helo: false });
        Ok(())
    }

    // ---- commands ------------------------------------------------------------

    /// Authenticates with `credentials`, using `mechanism` or, when `None`, the
    /// best mechanism the server offers for these credentials. Returns the
    /// mechanism chosen; the outcome arrives as [`Event::Authenticated`] or
    /// [`Event::AuthFailed`].
    ///
    /// The initial response goes on the AUTH line when that line fits the
    /// 512-octet command limit (RFC 4954 §4); a longer one (a JWT access token)
    /// is sent after the server's `334`.
    pub fn authenticate(
        &mut self,
        now: Instant,
        credentials: &Credentials,
        mechanism: Option<Mechanism>,
    ) -> Result<Mechanism, CommandError> {
        let caps = self.ready_caps()?;
        if self.authenticated.is_some() {
            return Err(CommandError::AlreadyAuthenticated);
        }
        if !self.tls && !self.config.dangerous_allow_credentials_without_tls {
            return Err(CommandError::CredentialsWithoutTls);
        }
        let mechanism = match mechanism {
            Some(m) => {
                if !credentials.mechanisms().contains(&m) {
                    return Err(sasl::SaslError::WrongCredentials { mechanism: m }.into());
                }
                if !caps.offers(m) {
                    return Err(CommandError::MechanismNotOffered {
                        mechanism: m,
                        offered: caps.auth.clone(),
                    });
                }
                m
            }
            None => {
                if caps.auth.is_empty() && caps.auth_other.is_empty() {
                    return Err(CommandError::AuthNotOffered);
                }
                credentials
                    .mechanisms()
                    .iter()
                    .copied()
                    .find(|m| caps.offers(*m))
                    .ok_or_else(|| CommandError::NoCommonMechanism {
                        offered: caps.auth.clone(),
                        other: caps.auth_other.clone(),
                    })?
            }
        };
        let responses = sasl::responses(mechanism, credentials, &self.config.server)?;
        let step = if sasl::write_auth(&mut self.out, &mut self.scratch, mechanism, &responses) {
            AuthStep::SentFirst
        } else {
            AuthStep::AwaitContinue
        };
        self.enter(
            now,
            State::Auth(Box::new(AuthState {
                mechanism,
                step,
                responses,
                challenges: 0,
                challenge: None,
            })),
        );
        Ok(mechanism)
    }

    /// Starts a mail transaction. With PIPELINING, MAIL, every RCPT and DATA go
    /// out as one group; otherwise one command per reply. When the server is
    /// ready for the body, [`Event::BodyWritable`] follows; when no recipient
    /// was accepted, [`Event::TransactionFailed`] follows (after an RSET).
    ///
    /// Extensions the envelope needs are checked against the capabilities first:
    /// a missing one is a [`CommandError`], and nothing is sent.
    pub fn send_envelope(
        &mut self,
        now: Instant,
        envelope: &Envelope,
    ) -> Result<TransactionId, CommandError> {
        self.start_transaction(now, envelope, false)
    }

    /// Starts a transaction whose recipients come one at a time, for a relay
    /// that passes each of its own client's commands on as it arrives.
    /// MAIL goes out with the recipients `envelope` already has (none is
    /// fine); [`Client::add_recipient`] sends more. Each MAIL and RCPT reply
    /// is reported as [`Event::EnvelopeReply`]. Nothing is sent for the body
    /// until [`Client::close_envelope`] (then DATA, or BDAT as usual), and
    /// [`Client::abandon_envelope`] ends the transaction with RSET instead.
    ///
    /// `envelope.smtputf8` must be set at MAIL time when a later recipient
    /// may need it. Taken only when the client [`is_ready`](Client::is_ready).
    pub fn open_transaction(
        &mut self,
        now: Instant,
        envelope: &Envelope,
    ) -> Result<TransactionId, CommandError> {
        self.ready_caps()?;
        self.start_transaction(now, envelope, true)
    }

    /// Adds a recipient to an open transaction ([`Client::open_transaction`])
    /// and returns its index in the report. With PIPELINING its RCPT goes
    /// out at once; otherwise after the replies already awaited.
    pub fn add_recipient(
        &mut self,
        _now: Instant,
        recipient: crate::command::Recipient,
    ) -> Result<usize, CommandError> {
        self.check_command()?;
        let dsn = self.caps.as_ref().is_some_and(|c| c.dsn);
        let txn = open_txn(&mut self.state)?;
        if recipient.mailbox.needs_smtputf8() && !txn.smtputf8 {
            return Err(CommandError::ExtensionRequired {
                extension: "SMTPUTF8",
                reason: "a non-ASCII recipient after MAIL without SMTPUTF8",
            });
        }
        if (recipient.notify.is_some() || recipient.original_recipient.is_some()) && !dsn {
            return Err(CommandError::ExtensionRequired {
                extension: "DSN",
                reason: "delivery status notification parameters",
            });
        }
        let index = txn.envelope.recipients.len();
        txn.report.recipients.push(RecipientResult {
            mailbox: recipient.mailbox.clone(),
            reply: None,
        });
        txn.envelope.recipients.push(recipient);
        if txn.pipelining || (txn.expect.is_empty() && txn.next_rcpt == index) {
            command::write_rcpt(&mut self.out, &txn.envelope.recipients[index]);
            txn.expect.push_back(Expect::Rcpt(index));
            txn.next_rcpt = index + 1;
        }
        Ok(index)
    }

    /// Ends the envelope of an open transaction: once every MAIL and RCPT
    /// reply is in, DATA goes out (or [`Event::BodyWritable`] follows, with
    /// BDAT) when MAIL and at least one recipient were accepted; otherwise
    /// the transaction fails with RSET ([`Event::TransactionFailed`]).
    pub fn close_envelope(&mut self, now: Instant) -> Result<(), CommandError> {
        self.end_envelope(now, false)
    }

    /// Gives up an open transaction before its body: RSET once the
    /// outstanding replies are in, then [`Event::TransactionFailed`].
    pub fn abandon_envelope(&mut self, now: Instant) -> Result<(), CommandError> {
        self.end_envelope(now, true)
    }

    fn end_envelope(&mut self, now: Instant, abandon: bool) -> Result<(), CommandError> {
        self.check_command()?;
        let txn = open_txn(&mut self.state)?;
        txn.open = false;
        txn.abandoned = abandon;
        if txn.expect.is_empty()
            && let State::Txn(txn) = std::mem::replace(&mut self.state, State::Closed)
        {
            self.envelope_done(now, txn);
        }
        Ok(())
    }

    fn start_transaction(
        &mut self,
        now: Instant,
        envelope: &Envelope,
        open: bool,
    ) -> Result<TransactionId, CommandError> {
        let overtaking = !open && self.can_send_envelope();
        let caps = if overtaking {
            self.caps.as_ref().ok_or(CommandError::NotReady {
                state: "not set up",
            })?
        } else {
            self.ready_caps()?
        };
        let plan = Plan::new(
            envelope,
            caps,
            self.tls,
            self.config.use_chunking && !self.config.pipeline_transactions,
            self.config.long_lines,
            self.config.nul,
            open,
        )?;
        let Plan {
            pipelining,
            chunking,
            params,
            body,
        } = plan;
        let encoder = BodyEncoder::new(body);
        if overtaking {
            // The previous message's `.` went out; its reply comes first.
            if let State::Txn(previous) = std::mem::replace(&mut self.state, State::Closed) {
                self.finishing.push_back(previous);
            }
        }
        let id = TransactionId(self.next_txn);
        self.next_txn += 1;
        command::write_mail(&mut self.out, envelope, params);
        let mut expect = VecDeque::with_capacity(envelope.recipients.len() + 2);
        expect.push_back(Expect::Mail);
        let mut next_rcpt = 0;
        if pipelining {
            for (i, rcpt) in envelope.recipients.iter().enumerate() {
                command::write_rcpt(&mut self.out, rcpt);
                expect.push_back(Expect::Rcpt(i));
            }
            next_rcpt = envelope.recipients.len();
            if !chunking && !open {
                self.out.extend_from_slice(b"DATA\r\n");
                expect.push_back(Expect::Data);
            }
        }
        let report = TransactionReport {
            id,
            mail: None,
            recipients: envelope
                .recipients
                .iter()
                .map(|r| RecipientResult {
                    mailbox: r.mailbox.clone(),
                    reply: None,
                })
                .collect(),
            data: None,
            message: None,
            body: BodyStats::default(),
        };
        self.enter(
            now,
            State::Txn(Box::new(Txn {
                report,
                envelope: envelope.clone(),
                pipelining,
                chunking,
                expect,
                next_rcpt,
                stage: Stage::Envelope,
                encoder,
                held: Vec::new(),
                open,
                abandoned: false,
                smtputf8: params.smtputf8,
                stepwise: open,
            })),
        );
        Ok(id)
    }

    /// Feeds the next bytes of the message (after [`Event::BodyWritable`]).
    /// Returns how many bytes of `data` were taken: fewer than given (possibly 0)
    /// when the transmit buffer holds [`ClientConfig::max_pending_body`] bytes;
    /// write out [`Client::poll_transmit`] and call again with the rest.
    ///
    /// A body the encoder refuses (a line over 998 octets, NUL, 8-bit in a 7-bit
    /// body) fails the connection: DATA cannot be aborted any other way.
    pub fn write_body(&mut self, now: Instant, data: &[u8]) -> Result<usize, CommandError> {
        self.check_command()?;
        let pending = self.out.len() - self.sent;
        let txn = body_txn(&mut self.state)?;
        let room = self.config.max_pending_body.saturating_sub(pending) / 2;
        let take = data.len().min(room);
        if take == 0 {
            return Ok(0);
        }
        let result = if txn.chunking {
            // The piece held back goes out now; this one is held in turn.
            if !txn.held.is_empty() {
                command::write_bdat(&mut self.out, txn.held.len(), false);
                self.out.extend_from_slice(&txn.held);
                txn.held.clear();
                txn.expect.push_back(Expect::Bdat);
            }
            txn.encoder.encode(&data[..take], &mut txn.held)
        } else {
            txn.encoder.encode(&data[..take], &mut self.out)
        };
        if let Err(e) = result {
            return Err(CommandError::Failed(self.fail_quiet(Error::Body(e))));
        }
        self.rearm(now);
        Ok(take)
    }

    /// Ends the message: writes the DATA terminator (or the last BDAT). The
    /// outcome arrives as [`Event::Delivered`] or [`Event::TransactionFailed`].
    pub fn finish_body(&mut self, now: Instant) -> Result<(), CommandError> {
        self.check_command()?;
        let txn = body_txn(&mut self.state)?;
        let result = if txn.chunking {
            let r = txn.encoder.finish(&mut txn.held);
            if r.is_ok() {
                command::write_bdat(&mut self.out, txn.held.len(), true);
                self.out.extend_from_slice(&txn.held);
                txn.held = Vec::new();
            }
            r
        } else {
            txn.encoder.finish(&mut self.out)
        };
        match result {
            Ok(stats) => txn.report.body = stats,
            Err(e) => return Err(CommandError::Failed(self.fail_quiet(Error::Body(e)))),
        }
        txn.expect.push_back(Expect::MessageEnd);
        txn.stage = Stage::Finishing;
        self.unconfirmed.push_back(txn.report.id);
        self.rearm(now);
        Ok(())
    }

    /// Sends RSET; the reply arrives as [`Event::Reply`].
    pub fn rset(&mut self, now: Instant) -> Result<(), CommandError> {
        self.ready_caps()?;
        self.out.extend_from_slice(b"RSET\r\n");
        self.enter(now, State::Rset { report: None });
        Ok(())
    }

    /// Sends NOOP (a liveness check for an idle pooled connection); the reply
    /// arrives as [`Event::Reply`].
    pub fn noop(&mut self, now: Instant) -> Result<(), CommandError> {
        self.ready_caps()?;
        self.out.extend_from_slice(b"NOOP\r\n");
        self.enter(now, State::Noop);
        Ok(())
    }

    /// Sends QUIT. [`Event::Closed`] follows the server's reply (or its closing
    /// the connection).
    pub fn quit(&mut self, now: Instant) -> Result<(), CommandError> {
        self.ready_caps()?;
        self.out.extend_from_slice(b"QUIT\r\n");
        self.enter(now, State::Quit);
        Ok(())
    }

    // ---- accessors -------------------------------------------------------------

    /// The capabilities of the last EHLO, once the session is set up. `None`
    /// before, and between STARTTLS and the second EHLO (the plaintext ones are
    /// never used after TLS).
    #[must_use]
    pub fn capabilities(&self) -> Option<&Capabilities> {
        match self.state {
            State::Greeting | State::Ehlo { .. } | State::StartTls | State::TlsHandshake => None,
            _ => self.caps.as_ref(),
        }
    }

    /// The server's greeting, once received.
    #[must_use]
    pub fn greeting(&self) -> Option<&Reply> {
        self.greeting.as_ref()
    }

    /// `true` when the connection is encrypted.
    #[must_use]
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The mechanism of a successful AUTH on this connection.
    #[must_use]
    pub fn authenticated(&self) -> Option<Mechanism> {
        self.authenticated
    }

    /// `true` when the machine takes a command (AUTH, a transaction, RSET, NOOP,
    /// QUIT) now.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.error.is_none() && matches!(self.state, State::Ready)
    }

    /// `true` after QUIT completed or a fatal error.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// `true` while the end of a message (`.` or `BDAT ... LAST`) has been
    /// handed out for sending and its reply has not arrived, and after the
    /// connection failed in that state: the server may have accepted the
    /// message. Sending it again could deliver it twice; a driver never does
    /// so on its own.
    #[must_use]
    pub fn message_unconfirmed(&self) -> bool {
        !self.unconfirmed.is_empty()
    }

    /// The transactions whose end went out without a reply yet (after a
    /// fatal error: the ones that may have been delivered), oldest first.
    /// More than one only with [`ClientConfig::pipeline_transactions`].
    pub fn unconfirmed_transactions(&self) -> impl Iterator<Item = TransactionId> + '_ {
        self.unconfirmed.iter().copied()
    }

    /// How to end this connection now: QUIT when the session is usable,
    /// abandon it (close, with TLS `close_notify`) when it failed or an
    /// exchange is half done, or just close after QUIT completed.
    #[must_use]
    pub fn session_end(&self) -> SessionEnd {
        match (&self.error, &self.state) {
            (Some(e), _) => SessionEnd::Abandon {
                reason: AbandonReason::Failed(e.clone()),
            },
            (None, State::Closed) => SessionEnd::Closed,
            (None, State::Ready) => SessionEnd::Quit,
            (None, state) => SessionEnd::Abandon {
                reason: AbandonReason::Busy {
                    state: state.name(),
                },
            },
        }
    }

    /// The sticky fatal error, if the connection failed.
    #[must_use]
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    // ---- internals -------------------------------------------------------------

    fn check_alive(&self) -> Result<(), Error> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn check_command(&self) -> Result<(), CommandError> {
        match (&self.error, &self.state) {
            (Some(e), _) => Err(CommandError::Failed(e.clone())),
            (None, State::Closed) => Err(CommandError::Closed),
            _ => Ok(()),
        }
    }

    /// The capabilities, when the machine is idle and set up.
    fn ready_caps(&self) -> Result<&Capabilities, CommandError> {
        self.check_command()?;
        match (&self.state, &self.caps) {
            (State::Ready, Some(caps)) => Ok(caps),
            (state, _) => Err(CommandError::NotReady {
                state: state.name(),
            }),
        }
    }

    /// Turns pipelining across transactions on or off for the transactions
    /// started from now on ([`ClientConfig::pipeline_transactions`]): a
    /// driver turns it on while it has several messages for the connection.
    pub fn set_pipeline_transactions(&mut self, on: bool) {
        self.config.pipeline_transactions = on;
    }

    /// `true` when [`Client::send_envelope`] would start a transaction now,
    /// before the current message's final reply: pipelining across
    /// transactions is on ([`ClientConfig::pipeline_transactions`]), offered,
    /// and the current message ended with `.` (not BDAT). An idle machine is
    /// [`Client::is_ready`] instead.
    #[must_use]
    pub fn can_send_envelope(&self) -> bool {
        let offered = self.caps.as_ref().is_some_and(|c| c.pipelining);
        self.error.is_none()
            && self.config.pipeline_transactions
            && offered
            && matches!(&self.state, State::Txn(txn)
                if txn.stage == Stage::Finishing
                    && txn.pipelining
                    && !txn.chunking
                    && txn.expect.len() == 1
                    && txn.expect.front() == Some(&Expect::MessageEnd))
    }

    /// What the machine waits for now.
    fn phase(&self) -> Phase {
        if !self.finishing.is_empty() {
            return Phase::DataEnd;
        }
        match &self.state {
            State::Greeting => Phase::Greeting,
            State::Ehlo { .. } => Phase::Ehlo,
            State::StartTls => Phase::StartTls,
            State::TlsHandshake => Phase::TlsHandshake,
            State::Ready | State::Closed => Phase::Idle,
            State::Auth(_) => Phase::Auth,
            State::Txn(txn) => match (txn.stage, txn.expect.front()) {
                (Stage::Body, _) => Phase::DataBlock,
                (_, Some(e)) => e.phase(),
                (_, None) => Phase::DataBlock,
            },
            State::Rset { .. } => Phase::Rset,
            State::Noop => Phase::Noop,
            State::Quit => Phase::Quit,
        }
    }

    /// Fails the connection for good and reports it.
    fn fail<T>(&mut self, error: Error) -> Result<T, Error> {
        Err(self.fail_quiet(error))
    }

    fn fail_quiet(&mut self, error: Error) -> Error {
        self.out.clear();
        self.sent = 0;
        self.timer.disarm();
        self.error = Some(error.clone());
        self.close(Some(error.clone()));
        error
    }

    fn close(&mut self, error: Option<Error>) {
        self.state = State::Closed;
        self.timer.disarm();
        self.events.push_back(Event::Closed { error });
    }

    fn ready(&mut self) {
        self.state = State::Ready;
        self.timer.disarm();
    }

    /// Moves to `state` and arms the timer for the reply that state waits
    /// for: the one place where the timer follows the state.
    fn enter(&mut self, now: Instant, state: State) {
        self.state = state;
        self.rearm(now);
    }

    /// Arms the timer again for the current state (after body data went out,
    /// or a reply moved the transaction on).
    fn rearm(&mut self, now: Instant) {
        match self.phase() {
            Phase::Idle => self.timer.disarm(),
            phase => self.timer.arm(now, phase, &self.config.timeouts),
        }
    }

    fn on_reply(&mut self, now: Instant, reply: Reply) -> Result<(), Error> {
        let phase = self.phase();
        // 421: the server is shutting the connection down, whatever we asked.
        if reply.code() == 421 && !matches!(self.state, State::Quit) {
            return self.fail(Error::ServiceUnavailable { phase, reply });
        }
        if let Some(txn) = self.finishing.pop_front() {
            // Replies come in command order: an overtaken transaction's
            // final reply is older than anything the current state waits for.
            self.finish_message(txn, reply);
            self.rearm(now);
            return Ok(());
        }
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Greeting => {
                if reply.code() != 220 {
                    let error = if reply.class() == 5 {
                        Error::Refused { phase, reply }
                    } else {
                        Error::UnexpectedReply { phase, reply }
                    };
                    return self.fail(error);
                }
                self.greeting = Some(reply);
                command::write_ehlo(&mut self.out, &self.config.ehlo_name);
                self.enter(now, State::Ehlo { helo: false });
            }
            State::Ehlo { helo } => {
                if reply.is_positive() {
                    let caps = if helo {
                        Capabilities {
                            server_name: Capabilities::from_ehlo(&reply).server_name,
                            ..Capabilities::none()
                        }
                    } else {
                        Capabilities::from_ehlo(&reply)
                    };
                    return self.after_ehlo(now, caps);
                }
                if !helo && reply.is_permanent() {
                    // RFC 5321 §3.2: fall back to HELO.
                    command::write_helo(&mut self.out, &self.config.ehlo_name);
                    self.enter(now, State::Ehlo { helo: true });
                } else {
                    return self.fail(Error::Refused { phase, reply });
                }
            }
            State::StartTls => {
                if reply.code() == 220 {
                    self.caps = None;
                    self.enter(now, State::TlsHandshake);
                    self.events.push_back(Event::StartTls);
                } else if self.config.tls == Security::StartTlsOpportunistic {
                    self.ready();
                    self.events.push_back(Event::Ready { tls: false });
                } else {
                    return self.fail(Error::StartTlsRefused { reply });
                }
            }
            State::Ready => return self.fail(Error::UnexpectedReply { phase, reply }),
            State::Auth(auth) => return self.on_auth_reply(now, auth, reply),
            State::Txn(txn) => return self.on_txn_reply(now, txn, reply),
            State::Rset { report } => {
                if !reply.is_positive() && report.is_some() {
                    return self.fail(Error::UnexpectedReply { phase, reply });
                }
                self.ready();
                self.events.push_back(match report {
                    Some(report) => Event::TransactionFailed(*report),
                    None => Event::Reply(reply),
                });
            }
            State::Noop => {
                self.ready();
                self.events.push_back(Event::Reply(reply));
            }
            State::Quit => self.close(None),
            State::TlsHandshake | State::Closed => {
                // handle_input never parses in these states.
                return self.fail(Error::UnexpectedReply { phase, reply });
            }
        }
        Ok(())
    }

    fn after_ehlo(&mut self, now: Instant, caps: Capabilities) -> Result<(), Error> {
        let starttls = caps.starttls;
        self.caps = Some(caps);
        if !self.tls && self.config.tls.wants_starttls() && starttls {
            self.out.extend_from_slice(b"STARTTLS\r\n");
            self.enter(now, State::StartTls);
            return Ok(());
        }
        if !self.tls && self.config.tls == Security::StartTls {
            return self.fail(Error::StartTlsUnavailable);
        }
        self.ready();
        self.events.push_back(Event::Ready { tls: self.tls });
        Ok(())
    }

    fn on_auth_reply(
        &mut self,
        now: Instant,
        mut auth: Box<AuthState>,
        reply: Reply,
    ) -> Result<(), Error> {
        let phase = Phase::Auth;
        if reply.code() == 334 {
            let respond = |out: &mut Vec<u8>, raw: &[u8]| {
                sasl::encode_response(raw, out);
                out.extend_from_slice(b"\r\n");
            };
            match auth.step {
                AuthStep::AwaitContinue => {
                    respond(&mut self.out, &auth.responses.first.0);
                    auth.step = AuthStep::SentFirst;
                }
                AuthStep::SentFirst if auth.mechanism == Mechanism::Login => {
                    let second = auth
                        .responses
                        .second
                        .take()
                        .unwrap_or(SecretBytes(Vec::new()));
                    respond(&mut self.out, &second.0);
                    auth.step = AuthStep::SentSecond;
                }
                AuthStep::SentFirst
                    if auth.mechanism.uses_token()
                        && auth.challenges < self.config.max_auth_challenges =>
                {
                    // The error challenge (RFC 7628 §3.2.3, Google's XOAUTH2):
                    // keep it for the report and acknowledge it.
                    auth.challenges += 1;
                    let text = reply.first_line();
                    auth.challenge =
                        Some(sasl::decode_challenge(text).unwrap_or_else(|| text.to_vec()));
                    if auth.mechanism == Mechanism::OAuthBearer {
                        self.out.extend_from_slice(b"AQ==\r\n");
                    } else {
                        self.out.extend_from_slice(b"\r\n");
                    }
                    auth.step = AuthStep::SentErrorAck;
                }
                AuthStep::SentFirst | AuthStep::SentSecond | AuthStep::SentErrorAck => {
                    if auth.challenge.is_none() {
                        let text = reply.first_line();
                        auth.challenge =
                            Some(sasl::decode_challenge(text).unwrap_or_else(|| text.to_vec()));
                    }
                    self.out.extend_from_slice(b"*\r\n");
                    auth.step = AuthStep::Cancelled;
                }
                AuthStep::Cancelled => {
                    return self.fail(Error::UnexpectedReply { phase, reply });
                }
            }
            self.enter(now, State::Auth(auth));
            return Ok(());
        }
        self.ready();
        if reply.is_positive() && auth.step != AuthStep::Cancelled {
            self.authenticated = Some(auth.mechanism);
            self.events.push_back(Event::Authenticated {
                mechanism: auth.mechanism,
                reply,
            });
        } else {
            let kind = classify_auth(auth.mechanism, &reply, auth.step == AuthStep::Cancelled);
            self.events.push_back(Event::AuthFailed(AuthFailure {
                mechanism: auth.mechanism,
                reply,
                challenge: auth.challenge.take(),
                kind,
            }));
        }
        Ok(())
    }

    fn on_txn_reply(&mut self, now: Instant, mut txn: Box<Txn>, reply: Reply) -> Result<(), Error> {
        let Some(expect) = txn.expect.pop_front() else {
            // Nothing outstanding: the server talks while the body is written.
            let phase = Phase::DataBlock;
            return self.fail(Error::UnexpectedReply { phase, reply });
        };
        match expect {
            Expect::Mail => {
                let ok = reply.is_positive();
                if txn.stepwise {
                    self.events.push_back(Event::EnvelopeReply {
                        id: txn.report.id,
                        recipient: None,
                        reply: reply.clone(),
                    });
                }
                txn.report.mail = Some(reply);
                if !txn.pipelining {
                    if ok {
                        self.send_next_envelope_command(&mut txn);
                    } else if !txn.open {
                        self.fail_transaction(now, txn);
                        return Ok(());
                    }
                }
                if txn.expect.is_empty() && !txn.open {
                    self.envelope_done(now, txn);
                    return Ok(());
                }
            }
            Expect::Rcpt(i) => {
                if txn.stepwise {
                    self.events.push_back(Event::EnvelopeReply {
                        id: txn.report.id,
                        recipient: Some(i),
                        reply: reply.clone(),
                    });
                }
                if let Some(r) = txn.report.recipients.get_mut(i) {
                    r.reply = Some(reply);
                }
                if !txn.pipelining {
                    self.send_next_envelope_command(&mut txn);
                }
                // Every envelope reply is in and nothing more was sent: BDAT
                // path, no recipient accepted, or a closed open transaction.
                if txn.expect.is_empty() && txn.stage == Stage::Envelope && !txn.open {
                    self.envelope_done(now, txn);
                    return Ok(());
                }
            }
            Expect::Data => {
                let go = reply.code() == 354;
                txn.report.data = Some(reply);
                if go && Self::envelope_accepted(&txn) {
                    txn.stage = Stage::Body;
                    let id = txn.report.id;
                    self.enter(now, State::Txn(txn));
                    self.events.push_back(Event::BodyWritable { id });
                    return Ok(());
                }
                if go {
                    // 354 without any accepted recipient (RFC 2920 §3.1): end
                    // the data at once with an empty message.
                    self.out.extend_from_slice(b".\r\n");
                    txn.expect.push_back(Expect::EmptyData);
                    txn.stage = Stage::Finishing;
                } else {
                    self.fail_transaction(now, txn);
                    return Ok(());
                }
            }
            Expect::Bdat => {
                // The first refused chunk decides; later replies (503) follow from it.
                if !reply.is_positive() && txn.stage != Stage::Draining {
                    txn.report.message = Some(reply);
                    txn.stage = Stage::Draining;
                }
                if txn.stage == Stage::Draining && txn.expect.is_empty() {
                    self.fail_transaction(now, txn);
                    return Ok(());
                }
            }
            Expect::MessageEnd => {
                if txn.stage == Stage::Draining {
                    self.unconfirmed.retain(|id| *id != txn.report.id);
                    self.fail_transaction(now, txn);
                    return Ok(());
                }
                self.ready();
                self.finish_message(txn, reply);
                return Ok(());
            }
            Expect::EmptyData => {
                self.fail_transaction(now, txn);
                return Ok(());
            }
        }
        self.enter(now, State::Txn(txn));
        Ok(())
    }

    /// The reply to a message's end: the transaction's outcome.
    fn finish_message(&mut self, txn: Box<Txn>, reply: Reply) {
        let txn = *txn;
        self.unconfirmed.retain(|id| *id != txn.report.id);
        let ok = reply.is_positive();
        let mut report = txn.report;
        report.message = Some(reply);
        let delivered = ok && report.recipients.iter().any(RecipientResult::accepted);
        self.events.push_back(if delivered {
            Event::Delivered(report)
        } else {
            Event::TransactionFailed(report)
        });
    }

    /// Without pipelining: sends the next RCPT, then DATA (or starts BDAT) after
    /// the last, when MAIL and a recipient were accepted.
    fn send_next_envelope_command(&mut self, txn: &mut Txn) {
        if txn.abandoned {
            return;
        }
        if let Some(rcpt) = txn.envelope.recipients.get(txn.next_rcpt) {
            command::write_rcpt(&mut self.out, rcpt);
            txn.expect.push_back(Expect::Rcpt(txn.next_rcpt));
            txn.next_rcpt += 1;
        } else if !txn.chunking && !txn.open && Self::envelope_accepted(txn) {
            self.out.extend_from_slice(b"DATA\r\n");
            txn.expect.push_back(Expect::Data);
        }
    }

    fn envelope_accepted(txn: &Txn) -> bool {
        txn.report.mail.as_ref().is_some_and(Reply::is_positive)
            && txn.report.recipients.iter().any(RecipientResult::accepted)
    }

    /// All envelope replies are in and no DATA is outstanding: start the BDAT
    /// body (or send DATA, for a transaction that was open), or fail when
    /// MAIL or every recipient was refused or the envelope was abandoned.
    fn envelope_done(&mut self, now: Instant, mut txn: Box<Txn>) {
        if txn.abandoned || !Self::envelope_accepted(&txn) {
            return self.fail_transaction(now, txn);
        }
        if !txn.chunking {
            self.out.extend_from_slice(b"DATA\r\n");
            txn.expect.push_back(Expect::Data);
            self.enter(now, State::Txn(txn));
            return;
        }
        txn.stage = Stage::Body;
        let id = txn.report.id;
        self.enter(now, State::Txn(txn));
        self.events.push_back(Event::BodyWritable { id });
    }

    /// Ends a failed transaction with RSET; the report is delivered once the
    /// RSET completes, so the caller finds the machine ready.
    fn fail_transaction(&mut self, now: Instant, txn: Box<Txn>) {
        let txn = *txn;
        let mut report = txn.report;
        report.body = txn.encoder.stats();
        self.out.extend_from_slice(b"RSET\r\n");
        self.enter(
            now,
            State::Rset {
                report: Some(Box::new(report)),
            },
        );
    }
}

postern_common::setters!(ClientConfig {
    tls: Security,
    ehlo_name: ClientName,
    server: ServerIdentity,
    timeouts: Timeouts,
    reply_limits: ReplyLimits,
    dangerous_allow_credentials_without_tls: bool,
    use_chunking: bool,
    long_lines: LongLines,
    nul: NulBytes,
    max_auth_challenges: u8,
    max_pending_body: usize,
    pipeline_transactions: bool
});
