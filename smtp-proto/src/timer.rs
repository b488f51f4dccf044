//! Per-phase timeouts (RFC 5321 §4.5.3.2) and the client's one deadline.
//!
//! The client waits for at most one thing at a time (the next reply, the TLS
//! handshake, or the next body chunk), so it keeps one deadline tagged with the
//! phase it belongs to; the phase is named in the error when it fires.

use std::fmt;
use std::time::{Duration, Instant};

/// What the client was waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// The `220` greeting.
    Greeting,
    /// The reply to EHLO or HELO.
    Ehlo,
    /// The reply to STARTTLS.
    StartTls,
    /// The adapter's TLS handshake after `220` to STARTTLS.
    TlsHandshake,
    /// A reply during AUTH.
    Auth,
    /// The reply to MAIL FROM.
    Mail,
    /// The reply to RCPT TO.
    Rcpt,
    /// The reply to DATA (`354`), RFC 5321 "DATA initiation".
    DataInit,
    /// The next chunk of the message from the caller, or a BDAT reply.
    DataBlock,
    /// The reply after the end of data, RFC 5321 "DATA termination".
    DataEnd,
    /// The reply to RSET.
    Rset,
    /// The reply to NOOP.
    Noop,
    /// The reply to QUIT.
    Quit,
    /// Nothing was pending: the connection was idle.
    Idle,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Greeting => "waiting for the greeting",
            Phase::Ehlo => "EHLO",
            Phase::StartTls => "STARTTLS",
            Phase::TlsHandshake => "TLS handshake",
            Phase::Auth => "AUTH",
            Phase::Mail => "MAIL FROM",
            Phase::Rcpt => "RCPT TO",
            Phase::DataInit => "DATA",
            Phase::DataBlock => "message body",
            Phase::DataEnd => "end of data",
            Phase::Rset => "RSET",
            Phase::Noop => "NOOP",
            Phase::Quit => "QUIT",
            Phase::Idle => "idle",
        })
    }
}

/// How long each phase may take. Defaults follow RFC 5321 §4.5.3.2 where it
/// gives a value (greeting, MAIL, RCPT 5 min; DATA initiation 2 min; data block
/// 3 min; end of data 10 min) and common practice elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Timeouts {
    /// The `220` greeting (5 min).
    pub greeting: Duration,
    /// EHLO/HELO (5 min).
    pub ehlo: Duration,
    /// STARTTLS reply (2 min).
    pub starttls: Duration,
    /// TLS handshake done by the adapter (2 min).
    pub tls_handshake: Duration,
    /// Each AUTH reply (5 min).
    pub auth: Duration,
    /// MAIL reply (5 min).
    pub mail: Duration,
    /// Each RCPT reply (5 min).
    pub rcpt: Duration,
    /// DATA reply (2 min).
    pub data_init: Duration,
    /// Between body chunks and for each BDAT reply (3 min).
    pub data_block: Duration,
    /// Reply after the end of data (10 min).
    pub data_end: Duration,
    /// RSET and NOOP replies (2 min).
    pub rset: Duration,
    /// QUIT reply (1 min).
    pub quit: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        const MIN: u64 = 60;
        Self {
            greeting: Duration::from_secs(5 * MIN),
            ehlo: Duration::from_secs(5 * MIN),
            starttls: Duration::from_secs(2 * MIN),
            tls_handshake: Duration::from_secs(2 * MIN),
            auth: Duration::from_secs(5 * MIN),
            mail: Duration::from_secs(5 * MIN),
            rcpt: Duration::from_secs(5 * MIN),
            data_init: Duration::from_secs(2 * MIN),
            data_block: Duration::from_secs(3 * MIN),
            data_end: Duration::from_secs(10 * MIN),
            rset: Duration::from_secs(2 * MIN),
            quit: Duration::from_secs(MIN),
        }
    }
}

impl Timeouts {
    /// The same timeout for every phase.
    #[must_use]
    pub fn uniform(timeout: Duration) -> Self {
        Self {
            greeting: timeout,
            ehlo: timeout,
            starttls: timeout,
            tls_handshake: timeout,
            auth: timeout,
            mail: timeout,
            rcpt: timeout,
            data_init: timeout,
            data_block: timeout,
            data_end: timeout,
            rset: timeout,
            quit: timeout,
        }
    }

    /// The timeout of a phase; `None` for [`Phase::Idle`], which has none.
    #[must_use]
    pub fn for_phase(&self, phase: Phase) -> Option<Duration> {
        Some(match phase {
            Phase::Greeting => self.greeting,
            Phase::Ehlo => self.ehlo,
            Phase::StartTls => self.starttls,
            Phase::TlsHandshake => self.tls_handshake,
            Phase::Auth => self.auth,
            Phase::Mail => self.mail,
            Phase::Rcpt => self.rcpt,
            Phase::DataInit => self.data_init,
            Phase::DataBlock => self.data_block,
            Phase::DataEnd => self.data_end,
            Phase::Rset | Phase::Noop => self.rset,
            Phase::Quit => self.quit,
            Phase::Idle => return None,
        })
    }
}

/// The single deadline of the client.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Timer {
    deadline: Option<(Instant, Phase)>,
}

impl Timer {
    /// Starts waiting for `phase` from `now`. An overflowing deadline (a timeout
    /// of centuries) means no deadline.
    pub(crate) fn arm(&mut self, now: Instant, phase: Phase, timeouts: &Timeouts) {
        self.deadline = timeouts
            .for_phase(phase)
            .and_then(|t| now.checked_add(t))
            .map(|at| (at, phase));
    }

    pub(crate) fn disarm(&mut self) {
        self.deadline = None;
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline.map(|(at, _)| at)
    }

    /// The phase whose deadline has passed at `now`, if any.
    pub(crate) fn expired(&self, now: Instant) -> Option<Phase> {
        match self.deadline {
            Some((at, phase)) if at <= now => Some(phase),
            _ => None,
        }
    }
}

postern_common::setters!(Timeouts {
    greeting: Duration,
    ehlo: Duration,
    starttls: Duration,
    tls_handshake: Duration,
    auth: Duration,
    mail: Duration,
    rcpt: Duration,
    data_init: Duration,
    data_block: Duration,
    data_end: Duration,
    rset: Duration,
    quit: Duration
});
