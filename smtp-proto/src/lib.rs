//! postern-smtp: a sans-IO SMTP submission client.
//!
//! The crate holds the whole SMTP dialogue of a submission client (greeting,
//! EHLO/HELO, STARTTLS, AUTH with PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER, MAIL /
//! RCPT / DATA or BDAT with PIPELINING, RSET, NOOP, QUIT) and does no IO: no
//! sockets, no clock, no runtime. A driver (an adapter crate, a test, a fuzzer)
//! moves bytes and time in and out.
//!
//! # The contract
//!
//! - **Inputs** are `handle_*` methods: [`Client::handle_input`] with every byte
//!   read from the connection, [`Client::handle_eof`] when the server closes it,
//!   [`Client::handle_timeout`] when [`Client::poll_timeout`] has passed, and
//!   [`Client::handle_tls_established`] after the driver finished the TLS
//!   handshake asked for by [`Event::StartTls`].
//! - **Commands** from the application are plain methods:
//!   [`Client::authenticate`], [`Client::send_envelope`], [`Client::write_body`],
//!   [`Client::finish_body`], [`Client::rset`], [`Client::noop`], [`Client::quit`].
//!   They are accepted when [`Client::is_ready`] (body calls after
//!   [`Event::BodyWritable`]).
//! - **Outputs** are `poll_*` methods. After every input or command the driver
//!   drains them in this order: [`Client::poll_transmit`] (write the bytes, then
//!   [`Client::advance_transmit`] with the count written), [`Client::poll_event`]
//!   until `None`, then [`Client::poll_timeout`] for the next deadline.
//! - **Time** is an argument (`now`); the client never reads a clock. A timer
//!   that fired is never due again, so a driver cannot spin.
//! - **Two error channels.** A command that cannot be carried out returns
//!   [`CommandError`] and changes nothing. A broken connection (malformed reply,
//!   timeout, bytes injected after STARTTLS, an unsendable body) is an [`Error`]:
//!   sticky, returned by every later call, reported once as [`Event::Closed`],
//!   and nothing is transmitted after it. A 4xx/5xx reply is neither: it is an
//!   event carrying the whole [`Reply`].
//!
//! Every buffer is bounded: replies by [`ReplyLimits`], the transmit buffer by
//! [`ClientConfig::max_pending_body`] plus one command group, the body encoder by
//! its output for one chunk.
//!
//! # A complete driver
//!
//! A blocking driver over a plain TCP connection (an adapter does the same with
//! async IO, TLS and a timer):
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use std::net::TcpStream;
//! use std::time::Instant;
//! use postern_smtp::{Client, ClientConfig, Envelope, Event, Mailbox, Security};
//!
//! fn send(message: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//!     let mut stream = TcpStream::connect("127.0.0.1:2525")?;
//!     stream.set_nodelay(true)?;
//!     let config = ClientConfig::default().tls(Security::Plaintext);
//!     let mut client = Client::new(config, Instant::now());
//!     let envelope = Envelope::new(
//!         Mailbox::parse("sender@example.com")?,
//!         [Mailbox::parse("rcpt@example.com")?],
//!     );
//!     let mut body = message;
//!     let mut buf = [0u8; 16 * 1024];
//!     loop {
//!         while let Some(bytes) = client.poll_transmit() {
//!             let n = stream.write(bytes)?;
//!             client.advance_transmit(n);
//!         }
//!         while let Some(event) = client.poll_event() {
//!             match event {
//!                 Event::Ready { .. } => {
//!                     client.send_envelope(Instant::now(), &envelope)?;
//!                 }
//!                 Event::BodyWritable { .. } => {
//!                     while !body.is_empty() {
//!                         let n = client.write_body(Instant::now(), body)?;
//!                         body = &body[n..];
//!                         while let Some(bytes) = client.poll_transmit() {
//!                             let n = stream.write(bytes)?;
//!                             client.advance_transmit(n);
//!                         }
//!                     }
//!                     client.finish_body(Instant::now())?;
//!                 }
//!                 Event::Delivered(report) | Event::TransactionFailed(report) => {
//!                     println!("{:?}", report.message);
//!                     client.quit(Instant::now())?;
//!                 }
//!                 Event::Closed { error: Some(e) } => return Err(e.into()),
//!                 Event::Closed { error: None } => return Ok(()),
//!                 _ => {}
//!             }
//!         }
//!         if let Some(bytes) = client.poll_transmit() {
//!             let n = stream.write(bytes)?;
//!             client.advance_transmit(n);
//!             continue;
//!         }
//!         // A real driver waits for readability *or* the deadline.
//!         let deadline = client.poll_timeout();
//!         stream.set_read_timeout(deadline.map(|d| d.saturating_duration_since(Instant::now()).max(std::time::Duration::from_millis(1))))?;
//!         match stream.read(&mut buf) {
//!             Ok(0) => client.handle_eof(Instant::now())?,
//!             Ok(n) => client.handle_input(Instant::now(), &buf[..n])?,
//!             Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
//!                 || e.kind() == std::io::ErrorKind::TimedOut =>
//!             {
//!                 client.handle_timeout(Instant::now())?
//!             }
//!             Err(e) => return Err(e.into()),
//!         }
//!     }
//! }
//! ```
//!
//! # STARTTLS
//!
//! On [`Event::StartTls`] the driver runs the TLS handshake over the same
//! socket and calls [`Client::handle_tls_established`]. It must not read ahead
//! into a buffer of its own before the upgrade: every byte read goes to
//! [`Client::handle_input`], and a byte that arrives between the `220` and the
//! handshake fails the connection with [`Error::PlaintextAfterStartTls`]
//! (response injection). After TLS the client forgets the plaintext
//! capabilities and sends EHLO again (RFC 3207 §4.2).

#![forbid(unsafe_code)]

pub mod address;
pub mod body;
mod client;
pub mod command;
mod content;
pub mod diagnose;
pub mod ehlo;
mod error;
mod event;
pub mod limits;
pub mod reply;
pub mod sasl;
mod security;
pub mod server;
pub mod timer;

pub use address::{
    AddressError, ClientName, Domain, MailDomain, Mailbox, NamedMailbox, ReversePath,
};
pub use body::{BodyConfig, BodyEncoder, BodyError, BodyStats, LongLines, NulBytes};
pub use client::{Client, ClientConfig};
pub use command::{BodyType, DsnReturn, Envelope, EsmtpParam, Notify, Recipient, XText};
pub use content::{ContentNeeds, ContentScanner};
pub use ehlo::Capabilities;
pub use error::{CommandError, Error};
pub use event::{
    AbandonReason, AuthFailure, AuthFailureKind, Event, RecipientResult, SessionEnd, TransactionId,
    TransactionReport,
};
pub use postern_common::{Diagnosis, Stage};
pub use reply::{EnhancedCode, Reply, ReplyError, ReplyLimits, ReplyParser};
pub use sasl::{Credentials, Mechanism, SaslError, Secret, ServerIdentity};
pub use security::{Security, UnknownSecurity};
pub use server::{
    AuthRequest, MailRequest, Question, Server, ServerConfig, ServerError, ServerEvent,
    ServerMisuse, ServerSecurity, ServerTimeouts,
};
pub use timer::{Phase, Timeouts};
