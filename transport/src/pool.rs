//! The connection pool: how many connections may be open, which idle one is
//! reused, when an idle one is checked with NOOP or closed, and when a used
//! one goes back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use std::sync::Arc;

use async_lock::{Semaphore, SemaphoreGuard, SemaphoreGuardArc};

use crate::connection::Connection;
use crate::runtime::Runtime;

/// Connection pool limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolConfig {
    /// Connections open at once (sends beyond wait); default 4.
    pub max_connections: usize,
    /// Messages per connection before it is closed with QUIT; default 100
    /// (Exchange Online and Gmail cut sessions after a few hundred).
    pub max_messages_per_connection: u32,
    /// An idle connection older than this is closed instead of reused;
    /// default 60 s (Postfix drops idle clients after 300 s, Exchange
    /// sooner).
    pub idle_timeout: Duration,
    /// A connection idle longer than this is checked with NOOP before reuse;
    /// a younger one is reused without a round trip. Default 5 s.
    pub noop_after: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections: 4,
            max_messages_per_connection: 100,
            idle_timeout: Duration::from_secs(60),
            noop_after: Duration::from_secs(5),
        }
    }
}

/// The idle connections and the limits on open ones.
pub(crate) struct Pool<R: Runtime> {
    config: PoolConfig,
    idle: Arc<Mutex<Vec<Connection<R>>>>,
    /// Under a shared connection limit: how long an idle connection keeps
    /// its slot before it is closed.
    idle_hold: Option<(Duration, Arc<crate::sharing::Coordinator>)>,
    permits: Arc<Semaphore>,
    shut: AtomicBool,
    opened: AtomicU64,
    reused: AtomicU64,
    pipelined: AtomicU64,
}

impl<R: Runtime> Pool<R> {
    pub(crate) fn new(
        config: PoolConfig,
        idle_hold: Option<(Duration, Arc<crate::sharing::Coordinator>)>,
    ) -> Self {
        Pool {
            permits: Arc::new(Semaphore::new(config.max_connections.max(1))),
            config,
            idle: Arc::new(Mutex::new(Vec::new())),
            idle_hold,
            shut: AtomicBool::new(false),
            opened: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            pipelined: AtomicU64::new(0),
        }
    }

    /// Waits until one more connection may be in use.
    pub(crate) async fn permit(&self) -> SemaphoreGuard<'_> {
        self.permits.acquire().await
    }

    /// [`Pool::permit`] held by a value rather than a borrow (a relayed
    /// transaction keeps its connection across calls).
    pub(crate) async fn permit_arc(&self) -> SemaphoreGuardArc {
        self.permits.acquire_arc().await
    }

    /// `true` after [`Pool::shutdown`].
    pub(crate) fn is_shut(&self) -> bool {
        self.shut.load(Ordering::Acquire)
    }

    /// Counts a connection opened by the caller.
    pub(crate) fn count_opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// How many more messages `conn` may carry before it is retired.
    pub(crate) fn allowance(&self, conn: &Connection<R>) -> usize {
        let left = self
            .config
            .max_messages_per_connection
            .saturating_sub(conn.messages);
        usize::try_from(left).unwrap_or(usize::MAX).max(1)
    }

    /// Counts transactions started before the previous one's reply.
    pub(crate) fn count_pipelined(&self, n: u64) {
        self.pipelined.fetch_add(n, Ordering::Relaxed);
    }

    /// (opened, reused, pipelined, idle now).
    pub(crate) fn counters(&self) -> (u64, u64, u64, usize) {
        (
            self.opened.load(Ordering::Relaxed),
            self.reused.load(Ordering::Relaxed),
            self.pipelined.load(Ordering::Relaxed),
            lock(&self.idle).len(),
        )
    }

    /// The most recently used live idle connection, if any: ones idle past
    /// `idle_timeout` are closed with QUIT in the background, ones idle past
    /// `noop_after` are checked with NOOP first.
    pub(crate) async fn checkout(&self, rt: &R) -> Option<Connection<R>> {
        loop {
            let mut conn = lock(&self.idle).pop()?;
            let idle_for = rt.now().saturating_duration_since(conn.idle_since);
            if idle_for >= self.config.idle_timeout {
                rt.spawn(conn.finish());
                continue;
            }
            if idle_for >= self.config.noop_after
                && let Err(e) = conn.noop().await
            {
                tracing::debug!(error = %e, "idle connection failed NOOP");
                rt.spawn(conn.finish());
                continue;
            }
            if let Some(slot) = conn.slot.as_mut()
                && !slot.renew().await
            {
                tracing::debug!("the connection's slot lapsed and was taken: closing it");
                rt.spawn(conn.finish());
                continue;
            }
            self.reused.fetch_add(1, Ordering::Relaxed);
            return Some(conn);
        }
    }

    /// Takes a connection back after a send: kept idle when it is ready and
    /// under its message limit, else ended (QUIT when the session allows it)
    /// in the background.
    pub(crate) fn checkin(&self, rt: &R, mut conn: Connection<R>) {
        if !conn.is_ready()
            || self.is_shut()
            || conn.messages >= self.config.max_messages_per_connection
        {
            rt.spawn(conn.finish());
            return;
        }
        let since = rt.now();
        conn.idle_since = since;
        if let Some((hold, coordinator)) = &self.idle_hold {
            // Free the slot for other processes when this one goes quiet,
            // or at once when another process waits for a slot.
            let (hold, coordinator) = (*hold, Arc::clone(coordinator));
            let idle = Arc::clone(&self.idle);
            let id = conn.id;
            let rt2 = rt.clone();
            rt.spawn(async move {
                let end = since + hold;
                loop {
                    let next = (rt2.now() + Duration::from_millis(100)).min(end);
                    rt2.sleep_until(next).await;
                    let still_idle = lock(&idle)
                        .iter()
                        .any(|c| c.id == id && c.idle_since == since);
                    if !still_idle {
                        return;
                    }
                    if rt2.now() >= end || coordinator.someone_waits(&rt2).await {
                        break;
                    }
                }
                let expired = {
                    let mut idle = lock(&idle);
                    idle.iter()
                        .position(|c| c.id == id && c.idle_since == since)
                        .map(|i| idle.remove(i))
                };
                if let Some(conn) = expired {
                    conn.finish().await;
                }
            });
        }
        lock(&self.idle).push(conn);
    }

    /// Refuses new sends from now on and ends the idle connections with QUIT.
    pub(crate) async fn shutdown(&self) {
        self.shut.store(true, Ordering::Release);
        let idle: Vec<_> = std::mem::take(&mut *lock(&self.idle));
        for conn in idle {
            conn.finish().await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

postern_common::setters!(PoolConfig {
    max_connections: usize,
    max_messages_per_connection: u32,
    idle_timeout: Duration,
    noop_after: Duration
});
