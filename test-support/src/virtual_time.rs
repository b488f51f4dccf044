//! A runtime on virtual time for the transport scenarios: a manual clock,
//! and in-memory pipes to the loopback peers instead of TCP, with TLS still
//! real over them (rustls on both ends). Tasks still run on the adapter's
//! own executor, so the same scenario runs on tokio and on async-std.
//!
//! Time moves only when the test says so ([`Virtual::advance`]): a pool idle
//! timeout, a refresh-ahead margin or a greeting timeout takes microseconds
//! instead of its real duration, and the outcome never depends on how
//! loaded the machine is.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postern_transport::runtime::{Runtime, Sleep};
use rustls_pki_types::ServerName;
use tokio::io::DuplexStream;
use tokio_rustls::rustls;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

use crate::{Dialer, SmtpServer, TokenServer, lock};

struct Timer {
    id: u64,
    deadline: Instant,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Clock {
    elapsed: Duration,
    timers: Vec<Timer>,
    next_id: u64,
}

struct Shared {
    base: Instant,
    clock: Mutex<Clock>,
    peers: Mutex<HashMap<u16, Dialer>>,
}

impl Shared {
    fn now(&self) -> Instant {
        self.base + lock(&self.clock).elapsed
    }
}

/// The transport's [`Runtime`] on virtual time, over runtime `R` (which
/// spawns the tasks and gives the real short waits of [`Virtual::until`]).
#[derive(Clone)]
pub struct Virtual<R> {
    rt: R,
    shared: Arc<Shared>,
}

impl<R> std::fmt::Debug for Virtual<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Virtual")
            .field("elapsed", &lock(&self.shared.clock).elapsed)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Virtual<R> {
    /// A clock at zero with no peers, spawning on `rt`.
    pub fn new(rt: R) -> Self {
        Virtual {
            rt,
            shared: Arc::new(Shared {
                base: Instant::now(),
                clock: Mutex::new(Clock::default()),
                peers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Connections to `port` (any host) reach `server` in memory.
    pub fn serve_smtp(&self, server: &SmtpServer) {
        lock(&self.shared.peers).insert(server.port(), server.dialer());
    }

    /// Connections to `port` (any host) reach `server` in memory.
    pub fn serve_tokens(&self, server: &TokenServer) {
        lock(&self.shared.peers).insert(server.port(), server.dialer());
    }

    /// Connections to `port` get the client end of whatever `dial` makes.
    pub fn serve(&self, port: u16, dial: impl Fn() -> DuplexStream + Send + Sync + 'static) {
        lock(&self.shared.peers).insert(port, Arc::new(dial));
    }

    /// Moves the clock forward by `d` and wakes every timer now due.
    pub fn advance(&self, d: Duration) {
        let due: Vec<Waker> = {
            let mut c = lock(&self.shared.clock);
            c.elapsed += d;
            let now = self.shared.base + c.elapsed;
            c.timers
                .iter_mut()
                .filter(|t| t.deadline <= now)
                .filter_map(|t| t.waker.take())
                .collect()
        };
        for w in due {
            w.wake();
        }
    }

    /// Timers waiting now (registered by a poll, not yet due).
    #[must_use]
    pub fn pending_timers(&self) -> usize {
        lock(&self.shared.clock)
            .timers
            .iter()
            .filter(|t| t.waker.is_some())
            .count()
    }

    /// Waits, in short real-time steps, until `done` holds: for work that
    /// happens on other tasks or on a peer's thread without time passing
    /// (a background token fetch, a QUIT, a session a peer closed). Panics
    /// after 10 s of real time.
    pub async fn until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let give_up = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < give_up, "still waiting for {what}");
            self.rt
                .sleep_until(Instant::now() + Duration::from_millis(1))
                .await;
        }
    }
}

/// A timer of [`Virtual`].
pub struct VirtualSleep {
    shared: Arc<Shared>,
    id: u64,
    deadline: Instant,
}

impl Future for VirtualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut c = lock(&self.shared.clock);
        if self.shared.base + c.elapsed >= self.deadline {
            c.timers.retain(|t| t.id != self.id);
            return Poll::Ready(());
        }
        let waker = Some(cx.waker().clone());
        match c.timers.iter_mut().find(|t| t.id == self.id) {
            Some(t) => {
                t.deadline = self.deadline;
                t.waker = waker;
            }
            None => c.timers.push(Timer {
                id: self.id,
                deadline: self.deadline,
                waker,
            }),
        }
        Poll::Pending
    }
}

impl Sleep for VirtualSleep {
    fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if let Some(t) = lock(&self.shared.clock)
            .timers
            .iter_mut()
            .find(|t| t.id == self.id)
        {
            t.deadline = deadline;
        }
    }
}

impl Drop for VirtualSleep {
    fn drop(&mut self) {
        lock(&self.shared.clock).timers.retain(|t| t.id != self.id);
    }
}

impl<R: Runtime> Runtime for Virtual<R> {
    type Tcp = Compat<DuplexStream>;
    type Tls = Compat<tokio_rustls::client::TlsStream<DuplexStream>>;
    type Sleep = VirtualSleep;

    async fn connect(&self, _host: &str, port: u16) -> io::Result<Self::Tcp> {
        let dial = lock(&self.shared.peers).get(&port).cloned();
        match dial {
            Some(dial) => Ok(dial().compat()),
            None => Err(io::ErrorKind::ConnectionRefused.into()),
        }
    }

    async fn tls_connect(
        &self,
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
        tcp: Self::Tcp,
    ) -> io::Result<Self::Tls> {
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(server_name, tcp.into_inner())
            .await?;
        Ok(tls.compat())
    }

    fn sleep_until(&self, deadline: Instant) -> VirtualSleep {
        let id = {
            let mut c = lock(&self.shared.clock);
            c.next_id += 1;
            c.next_id
        };
        VirtualSleep {
            shared: Arc::clone(&self.shared),
            id,
            deadline,
        }
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.rt.spawn(task);
    }

    fn now(&self) -> Instant {
        self.shared.now()
    }

    fn unix_now(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        real + lock(&self.shared.clock).elapsed.as_secs()
    }
}

/// Runs `a` and `b` together and returns both results (the scenario's send
/// and the hand that moves the clock).
pub async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let mut ra = None;
    let mut rb = None;
    std::future::poll_fn(|cx| {
        if ra.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        match (ra.take(), rb.take()) {
            (Some(x), Some(y)) => Poll::Ready((x, y)),
            (x, y) => {
                ra = x;
                rb = y;
                Poll::Pending
            }
        }
    })
    .await
}
