//! A transport for the tests of applications that send mail: it records
//! what would have been sent and never connects.

use std::sync::{Arc, Mutex, MutexGuard};

use postern_smtp::{Envelope, Reply, ReplyParser, TransactionId, TransactionReport};

use crate::error::Error;
use crate::message::Message;

/// One message a [`StubTransport`] took.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sent {
    /// The envelope, with what the content needs declared (as
    /// [`crate::Transport::send`] declares it).
    pub envelope: Envelope,
    /// The message as given.
    pub message: Vec<u8>,
    /// The exact bytes that would follow `DATA`: line ends made CRLF,
    /// leading dots doubled, the terminator.
    pub wire: Vec<u8>,
}

/// Stands in for a [`crate::Transport`] in an application's tests: `send`
/// has the same signature and the same checks of the message (line length,
/// NUL, 8-bit data needing `BODY=8BITMIME`, every line end repaired), and
/// every message is recorded instead of sent. It can be told to refuse.
///
/// ```
/// # futures_lite_block_on(async {
/// use postern_transport::{Envelope, Mailbox, StubTransport};
/// let stub = StubTransport::new();
/// let env = Envelope::new(Mailbox::parse("a@example.com")?, [Mailbox::parse("b@example.com")?]);
/// stub.send(&env, "Subject: hi\r\n\r\nhello\r\n").await?;
/// assert_eq!(stub.sent().len(), 1);
/// stub.refuse("550 5.1.1 no such user");
/// assert!(stub.send(&env, "Subject: hi\r\n\r\nhello\r\n").await.is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # });
/// # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let mut f = std::pin::pin!(f);
/// #     let waker = std::task::Waker::noop();
/// #     loop {
/// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut std::task::Context::from_waker(waker)) { return v; }
/// #     }
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct StubTransport {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    sent: Vec<Sent>,
    refusal: Option<Reply>,
    next: u64,
}

fn reply(text: &str) -> Result<Reply, Error> {
    let wire = format!("{}\r\n", text.trim_end());
    match ReplyParser::default().parse(wire.as_bytes()) {
        Ok((_, Some(r))) => Ok(r),
        _ => Err(Error::Config(format!("{text:?} is not an SMTP reply"))),
    }
}

impl StubTransport {
    /// A stub that accepts every message.
    #[must_use]
    pub fn new() -> Self {
        StubTransport::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on, refuse every recipient with `reply` (for example
    /// `"550 5.1.1 no such user"` or `"451 4.3.0 try later"`): `send` fails
    /// with [`Error::Rejected`] as it would against a server.
    pub fn refuse(&self, reply_text: &str) {
        self.lock().refusal = reply(reply_text).ok();
    }

    /// From now on, accept every message again.
    pub fn accept(&self) {
        self.lock().refusal = None;
    }

    /// Every message taken so far, in order.
    #[must_use]
    pub fn sent(&self) -> Vec<Sent> {
        self.lock().sent.clone()
    }

    /// Takes `message` for the envelope's recipients, as
    /// [`crate::Transport::send`] would: the same report, the same errors
    /// for a message that cannot be sent.
    pub async fn send(
        &self,
        envelope: &Envelope,
        message: impl Into<Message>,
    ) -> Result<TransactionReport, Error> {
        let message = message.into();
        let envelope = message.declared(envelope).into_owned();
        let bytes = message.read_all().await.map_err(Error::Message)?;
        let (wire, stats) = envelope.data_wire(&bytes)?;
        let mut s = self.lock();
        let id = TransactionId(s.next);
        s.next += 1;
        let refusal = s.refusal.clone();
        let accepted = refusal.is_none();
        let report = TransactionReport::simulated(
            id,
            envelope.recipients.iter().map(|r| r.mailbox.clone()),
            refusal,
            stats,
        );
        if !accepted {
            return Err(Error::Rejected(Box::new(report)));
        }
        s.sent.push(Sent {
            envelope,
            message: bytes,
            wire,
        });
        Ok(report)
    }
}
