//! Sharing one mailbox among processes: the token record and the limits,
//! kept in a [`Store`], with every judgment made by the cores
//! ([`postern_oauth::shared`], [`postern_smtp::limits`]).
//!
//! Every store operation is bounded by [`Sharing::op_timeout`]. When the
//! store fails, this process goes on alone (its own token cache, its own
//! counts in memory) and says so once in the log; when the store answers
//! again, sharing resumes and that is logged once too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use postern_oauth::shared::{self, Outcome, Plan, SharedConfig, SharedRecord, StoreKey};
use postern_oauth::{CacheConfig, FetchError, Secret, TokenResponse};
use postern_smtp::limits::{self, Admission, LimitSignal, MailboxLimits};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::runtime::{Runtime, until};
use crate::store::{MemoryStore, Store, StoreError, unix_ms};

/// How a transport shares its tokens and its mailbox's limits with other
/// processes.
#[derive(Clone, Debug)]
#[must_use]
pub struct Sharing {
    store: Arc<dyn Store>,
    key: Option<StoreKey>,
    namespace: String,
    op_timeout: Duration,
    tokens: SharedConfig,
    limits: MailboxLimits,
    slot_lease: Duration,
    idle_hold: Duration,
}

impl Sharing {
    /// Share through `store`, with no limits (add them with
    /// [`Sharing::limits`]).
    pub fn new(store: Arc<dyn Store>) -> Self {
        Sharing {
            store,
            key: None,
            namespace: "postern".to_owned(),
            op_timeout: Duration::from_secs(2),
            tokens: SharedConfig::default(),
            limits: MailboxLimits::none(),
            slot_lease: Duration::from_secs(60),
            idle_hold: Duration::from_secs(2),
        }
    }

    /// Seals token records with this key (XChaCha20-Poly1305). Every process
    /// sharing the store needs the same key.
    pub fn store_key(mut self, key: StoreKey) -> Self {
        self.key = Some(key);
        self
    }

    /// The prefix of every key in the store; default `postern`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Bounds each store operation; default 2 s. Past it the process goes
    /// on alone.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// How long a token fetch lease lasts (default 60 s): a process that
    /// dies while fetching is replaced after it. Keep it above the token
    /// request timeout (30 s by default).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.tokens.lease = lease;
        self
    }

    /// The mailbox's limits, counted in the store.
    pub fn limits(mut self, limits: MailboxLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How long a connection slot lasts without renewal (default 60 s): a
    /// process that dies holding one frees it after this. Renewed whenever
    /// the connection is used.
    pub fn slot_lease(mut self, lease: Duration) -> Self {
        self.slot_lease = lease;
        self
    }

    /// Under a shared connection limit, an idle pooled connection is
    /// closed (freeing its slot for other processes) after this; default 2 s.
    pub fn idle_hold(mut self, hold: Duration) -> Self {
        self.idle_hold = hold;
        self
    }
}

/// The running side of [`Sharing`] for one transport.
#[derive(Debug)]
pub(crate) struct Coordinator {
    pub(crate) sharing: Sharing,
    /// This process's name in leases.
    me: String,
    /// The namespace for this mailbox's limits.
    mailbox: String,
    /// Counts and slots while the store is unavailable.
    local: MemoryStore,
    degraded: AtomicBool,
    rolls: AtomicU64,
    /// A quota stop known here (Unix ms), and when the store was last read
    /// for one.
    stopped_until_ms: AtomicU64,
    stop_checked_ms: AtomicU64,
    /// When this process last said it waits for a slot (Unix ms).
    waiting_noted_ms: AtomicU64,
}

fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize()[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A connection slot held in the store (or locally).
pub(crate) struct Slot<R: Runtime> {
    rt: R,
    coordinator: Arc<Coordinator>,
    key: String,
    value: Vec<u8>,
    until_ms: u64,
    local: bool,
}

impl<R: Runtime> Slot<R> {
    /// Extends the slot when half its lease has passed. A slot lost to
    /// another process (its lease had lapsed) gives `false`: the caller
    /// closes the connection.
    pub(crate) async fn renew(&mut self) -> bool {
        if self.local {
            // Taken while the store was down: once it is back, the
            // connection goes, so the shared limit holds again.
            return self.coordinator.is_degraded();
        }
        let now = unix_ms();
        let lease = ms(self.coordinator.sharing.slot_lease);
        if self.until_ms.saturating_sub(now) > lease / 2 {
            return true;
        }
        let until = now.saturating_add(lease);
        let value = limits::slot_value(&self.coordinator.me, until);
        let c = Arc::clone(&self.coordinator);
        let swapped = if self.local {
            c.local
                .swap(&self.key, Some(&self.value), Some(&value))
                .await
        } else {
            c.op(&self.rt, |s| {
                s.swap(&self.key, Some(&self.value), Some(&value))
            })
            .await
        };
        match swapped {
            Ok(true) => {
                self.value = value;
                self.until_ms = until;
                true
            }
            Ok(false) => false,
            // The store is down: keep the connection; the lease stands.
            Err(_) => true,
        }
    }
}

impl<R: Runtime> Slot<R> {
    /// Gives the slot back now (the connection is closed). When the store
    /// misses it, the drop below tries again in the background.
    pub(crate) async fn release(mut self) {
        let released = if self.local {
            self.coordinator
                .local
                .swap(&self.key, Some(&self.value), None)
                .await
                .is_ok()
        } else {
            self.coordinator
                .op(&self.rt, |s| s.swap(&self.key, Some(&self.value), None))
                .await
                .is_ok()
        };
        if released {
            self.key.clear();
        }
    }
}

impl<R: Runtime> Drop for Slot<R> {
    fn drop(&mut self) {
        if self.key.is_empty() {
            return;
        }
        let c = Arc::clone(&self.coordinator);
        let key = std::mem::take(&mut self.key);
        let value = std::mem::take(&mut self.value);
        let local = self.local;
        let rt = self.rt.clone();
        let until_ms = self.until_ms;
        self.rt.spawn(async move {
            if local {
                let _ = c.local.swap(&key, Some(&value), None).await;
                return;
            }
            // A release the store missed (it was down) is tried again until
            // the slot would lapse anyway, so other processes do not wait
            // for the lease.
            while c
                .op(&rt, |s| s.swap(&key, Some(&value), None))
                .await
                .is_err()
                && unix_ms() < until_ms
            {
                rt.sleep_until(rt.now() + Duration::from_millis(250)).await;
            }
        });
    }
}

/// What a shared token fetch gave.
pub(crate) enum Fetched {
    /// A token for the local cache (fetched here or adopted).
    Token(TokenResponse),
    /// The fetch failed.
    Failed(FetchError),
    /// The store is unavailable: go on alone.
    Unavailable,
}

impl Coordinator {
    pub(crate) fn new(sharing: Sharing, mailbox: &str) -> Self {
        let mut random = [0u8; 6];
        let _ = getrandom::fill(&mut random);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        let me = format!(
            "{host}:{}:{}",
            std::process::id(),
            random
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let ns = &sharing.namespace;
        let mailbox = format!("{ns}:mbox:{}", digest(&[&mailbox.to_ascii_lowercase()]));
        Coordinator {
            sharing,
            me,
            mailbox,
            local: MemoryStore::new(),
            degraded: AtomicBool::new(false),
            rolls: AtomicU64::new(0),
            stopped_until_ms: AtomicU64::new(0),
            stop_checked_ms: AtomicU64::new(0),
            waiting_noted_ms: AtomicU64::new(0),
        }
    }

    /// The store key of one credential set's token record.
    pub(crate) fn token_key(&self, parts: &[&str]) -> String {
        format!("{}:token:{}", self.sharing.namespace, digest(parts))
    }

    /// `true` while this process goes on alone.
    pub(crate) fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// One store operation, bounded, with the degraded state logged once
    /// per change.
    async fn op<'a, R: Runtime, T>(
        &'a self,
        rt: &R,
        f: impl FnOnce(&'a dyn Store) -> crate::store::StoreFuture<'a, T>,
    ) -> Result<T, StoreError> {
        let deadline = rt.now() + self.sharing.op_timeout;
        let result = match until(rt, deadline, f(&*self.sharing.store)).await {
            Some(r) => r,
            None => {
                self.sharing.store.reset();
                Err(StoreError::Unavailable(format!(
                    "no answer within {} ms",
                    self.sharing.op_timeout.as_millis()
                )))
            }
        };
        match &result {
            Ok(_) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::warn!(store = ?self.sharing.store, "the shared store is back: sharing tokens and limits again");
                }
            }
            Err(e) => {
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "the shared store failed: going on with this process's own token cache and limits until it is back");
                }
            }
        }
        result
    }

    /// A token for the local cache's fetch ticket: adopted from the store,
    /// fetched under the store's lease, or [`Fetched::Unavailable`].
    pub(crate) async fn fetch_token<R, F, Fut>(
        &self,
        rt: &R,
        key: &str,
        configured: Option<&Secret>,
        cache: &CacheConfig,
        deadline: Instant,
        request: F,
    ) -> Fetched
    where
        R: Runtime,
        F: Fn(Option<Secret>) -> Fut,
        Fut: std::future::Future<Output = Result<TokenResponse, FetchError>>,
    {
        let config = self.sharing.tokens.margin(cache.expiry_margin);
        let sealing = self.sharing.key.as_ref();
        loop {
            let raw = match self.op(rt, |s| s.get(key)).await {
                Ok(raw) => raw,
                Err(_) => return Fetched::Unavailable,
            };
            let record = match raw
                .as_deref()
                .map(|b| SharedRecord::from_bytes(b, sealing, key))
            {
                None => None,
                Some(Ok(r)) => Some(r),
                Some(Err(e)) => {
                    tracing::error!(error = %e, "the shared token record cannot be used");
                    return Fetched::Failed(FetchError::Transport(e.to_string()));
                }
            };
            let now_ms = unix_ms();
            match shared::plan(record.as_ref(), now_ms, &self.me, configured, &config) {
                Plan::Adopt(token) => {
                    tracing::debug!("adopted the shared access token");
                    let mut response = token.to_response(now_ms);
                    response.refresh_token = record.and_then(|r| r.refresh_token);
                    return Fetched::Token(response);
                }
                Plan::Wait { until_ms, .. } => {
                    let wait = Duration::from_millis(until_ms.saturating_sub(now_ms))
                        .min(config.poll)
                        .max(Duration::from_millis(10));
                    let at = rt.now() + wait;
                    if at >= deadline {
                        return Fetched::Failed(FetchError::TimedOut);
                    }
                    rt.sleep_until(at).await;
                }
                Plan::Fetch { take, redeem, .. } => {
                    let bytes = take.to_bytes(sealing, key, nonce());
                    match self
                        .op(rt, |s| s.swap(key, raw.as_deref(), Some(&bytes)))
                        .await
                    {
                        Err(_) => return Fetched::Unavailable,
                        Ok(false) => continue,
                        Ok(true) => {}
                    }
                    let sent_ms = unix_ms();
                    let result = request(redeem.clone()).await;
                    let outcome = match &result {
                        Ok(t) => Outcome::Token {
                            token: shared::SharedToken::from_response(t, sent_ms, cache),
                            rotated: t.refresh_token.clone(),
                        },
                        Err(FetchError::Retry {
                            after: Some(after), ..
                        }) => Outcome::Failed {
                            retry_at_ms: Some(unix_ms().saturating_add(ms(*after))),
                            retired: false,
                        },
                        Err(e) => Outcome::Failed {
                            retry_at_ms: None,
                            retired: redeem.is_some() && e.retires_refresh_token(),
                        },
                    };
                    self.settle(rt, key, redeem.as_ref(), outcome).await;
                    return match result {
                        Ok(t) => Fetched::Token(t),
                        Err(e) => Fetched::Failed(e),
                    };
                }
            }
        }
    }

    /// Writes the outcome of this process's fetch (compare-and-swap, read
    /// again on a lost swap).
    async fn settle<R: Runtime>(
        &self,
        rt: &R,
        key: &str,
        redeemed: Option<&Secret>,
        outcome: Outcome,
    ) {
        let sealing = self.sharing.key.as_ref();
        for _ in 0..16 {
            let Ok(raw) = self.op(rt, |s| s.get(key)).await else {
                break;
            };
            let current = raw
                .as_deref()
                .and_then(|b| SharedRecord::from_bytes(b, sealing, key).ok());
            let settled = shared::settle(current.as_ref(), &self.me, redeemed, outcome.clone());
            if settled.raced {
                tracing::warn!(
                    "another process redeemed the refresh token while this one did (its lease had lapsed); the store keeps the other's"
                );
            }
            let bytes = settled.next.to_bytes(sealing, key, nonce());
            match self
                .op(rt, |s| s.swap(key, raw.as_deref(), Some(&bytes)))
                .await
            {
                Ok(true) => return,
                Ok(false) => {}
                Err(_) => break,
            }
        }
        tracing::warn!("the fetched token could not be written to the shared store");
    }

    /// Waits until a message of `recipients` recipients may go under the
    /// mailbox's rates; [`Error::LimitReached`] when the recipient quota (or
    /// a quota refusal seen by any process) stops the mailbox.
    pub(crate) async fn admit<R: Runtime>(&self, rt: &R, recipients: u64) -> Result<(), Error> {
        let l = self.sharing.limits;
        if l.messages.is_none() && l.recipients.is_none() {
            return Ok(());
        }
        loop {
            let now_ms = unix_ms();
            if let Some(until) = self.stopped_until(rt, now_ms).await {
                return Err(Error::LimitReached {
                    until_unix_ms: until,
                    what: "the mailbox's sending quota (the server refused a message for it)",
                });
            }
            // The message rate first: a message over it waits for the next
            // window without touching the recipient count.
            if let Some(rate) = l.messages {
                let before = self
                    .count(rt, "msg", rate.window(now_ms).index, 1, rate.per)
                    .await
                    .saturating_sub(1);
                if let Admission::WaitUntil(until) =
                    limits::admit(&l, now_ms, recipients, Some(before), None)
                {
                    self.rolls.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        wait_ms = until.saturating_sub(now_ms),
                        "the mailbox's message rate is used up: waiting for the next window"
                    );
                    let wait = Duration::from_millis(until.saturating_sub(now_ms) + jitter_ms(250));
                    rt.sleep_until(rt.now() + wait).await;
                    continue;
                }
            }
            let Some(rate) = l.recipients else {
                return Ok(());
            };
            let before = self
                .count(rt, "rcpt", rate.window(now_ms).index, recipients, rate.per)
                .await
                .saturating_sub(recipients);
            return match limits::admit(&l, now_ms, recipients, None, Some(before)) {
                Admission::Exhausted(until) => Err(Error::LimitReached {
                    until_unix_ms: until,
                    what: "the mailbox's recipients per window",
                }),
                _ => Ok(()),
            };
        }
    }

    /// When a quota refusal stopped the mailbox, until when. Read from the
    /// store at most once a second (a refusal seen here is known at once).
    async fn stopped_until<R: Runtime>(&self, rt: &R, now_ms: u64) -> Option<u64> {
        let checked = self.stop_checked_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(checked) >= 1000 {
            let key = format!("{}:stopped", self.mailbox);
            if let Ok(v) = self.op(rt, |s| s.get(&key)).await {
                let until = v
                    .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                self.stopped_until_ms.fetch_max(until, Ordering::Relaxed);
                self.stop_checked_ms.store(now_ms, Ordering::Relaxed);
            }
        }
        let until = self.stopped_until_ms.load(Ordering::Relaxed);
        (until > now_ms).then_some(until)
    }

    async fn count<R: Runtime>(
        &self,
        rt: &R,
        what: &str,
        window: u64,
        n: u64,
        per: Duration,
    ) -> u64 {
        let key = format!("{}:{what}", self.mailbox);
        let keep = per.saturating_mul(2);
        match self.op(rt, |s| s.add(&key, window, n, keep)).await {
            Ok(c) => c,
            Err(_) => self.local.add(&key, window, n, keep).await.unwrap_or(n),
        }
    }

    /// `true` when the mailbox's connections are limited.
    pub(crate) fn limits_connections(&self) -> bool {
        self.sharing.limits.connections.is_some()
    }

    /// How long a caller waits for a connection slot before giving up:
    /// two slot leases (a slot held by a dead process lapses within one).
    pub(crate) fn slot_wait(&self) -> Duration {
        self.sharing.slot_lease.saturating_mul(2)
    }

    /// A connection slot under the mailbox's connection limit (`None` when
    /// there is no limit), waiting for one until `deadline`.
    pub(crate) async fn acquire_slot<R: Runtime>(
        self: &Arc<Self>,
        rt: &R,
        deadline: Instant,
    ) -> Result<Option<Slot<R>>, Error> {
        if !self.limits_connections() {
            return Ok(None);
        }
        loop {
            if let Some(slot) = self.try_slot(rt).await {
                return Ok(Some(slot));
            }
            self.wait_for_slot(rt, deadline).await?;
        }
    }

    /// Sleeps a little before the next look for a free slot;
    /// [`Error::LimitReached`] past `deadline`.
    pub(crate) async fn wait_for_slot<R: Runtime>(
        &self,
        rt: &R,
        deadline: Instant,
    ) -> Result<(), Error> {
        // Tell holders of idle connections (in any process) that a caller
        // waits, at most every 200 ms.
        let now_ms = unix_ms();
        let noted = self.waiting_noted_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(noted) >= 200 {
            self.waiting_noted_ms.store(now_ms, Ordering::Relaxed);
            let key = format!("{}:waiting", self.mailbox);
            let _ = self
                .op(rt, |s| {
                    s.add(&key, now_ms / 1000, 1, Duration::from_secs(10))
                })
                .await;
        }
        let at = rt.now() + Duration::from_millis(20 + jitter_ms(60));
        if at >= deadline {
            return Err(Error::LimitReached {
                until_unix_ms: unix_ms(),
                what: "the mailbox's concurrent connections (no slot became free in time)",
            });
        }
        rt.sleep_until(at).await;
        Ok(())
    }

    /// One look for a free connection slot: the first free or lapsed one is
    /// taken (compare-and-swap). Slots are counted locally while the store
    /// is unavailable.
    pub(crate) async fn try_slot<R: Runtime>(self: &Arc<Self>, rt: &R) -> Option<Slot<R>> {
        let limit = self.sharing.limits.connections?;
        let lease = ms(self.sharing.slot_lease);
        let now = unix_ms();
        let until = now.saturating_add(lease);
        let value = limits::slot_value(&self.me, until);
        let mut local_only = false;
        for i in 0..limit.max(1) {
            let key = format!("{}:conn:{i}", self.mailbox);
            let current = if local_only {
                Err(StoreError::Unavailable(String::new()))
            } else {
                self.op(rt, |s| s.get(&key)).await
            };
            let (store_local, current) = match current {
                Ok(c) => (false, c),
                Err(_) => {
                    local_only = true;
                    (true, self.local.get(&key).await.unwrap_or(None))
                }
            };
            if !limits::slot_is_free(current.as_deref(), now) {
                continue;
            }
            let swapped = if store_local {
                self.local
                    .swap(&key, current.as_deref(), Some(&value))
                    .await
            } else {
                self.op(rt, |s| s.swap(&key, current.as_deref(), Some(&value)))
                    .await
            };
            if let Ok(true) = swapped {
                return Some(Slot {
                    rt: rt.clone(),
                    coordinator: Arc::clone(self),
                    key,
                    value,
                    until_ms: until,
                    local: store_local,
                });
            }
        }
        None
    }

    /// Acts on what a server reply said about the limits: a quota refusal
    /// stops the mailbox for every process until the recipient (or message)
    /// window rolls over.
    pub(crate) async fn observe<R: Runtime>(&self, rt: &R, signal: LimitSignal) {
        if signal != LimitSignal::QuotaExceeded {
            return;
        }
        let l = self.sharing.limits;
        let now = unix_ms();
        let until = l
            .recipients
            .or(l.messages)
            .unwrap_or(limits::Rate::per_day(0))
            .window(now)
            .ends_at_ms;
        let key = format!("{}:stopped", self.mailbox);
        let value = until.to_string().into_bytes();
        tracing::warn!(
            until_unix_ms = until,
            "the server says the mailbox's quota is used up: stopping sends through it until the window rolls over"
        );
        let current = self.op(rt, |s| s.get(&key)).await.unwrap_or(None);
        let _ = self
            .op(rt, |s| s.swap(&key, current.as_deref(), Some(&value)))
            .await;
        let _ = self.local.swap(&key, None, Some(&value)).await;
        self.stopped_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// Whether a caller (in any process) waited for a connection slot in
    /// this second or the last.
    pub(crate) async fn someone_waits<R: Runtime>(&self, rt: &R) -> bool {
        let key = format!("{}:waiting", self.mailbox);
        let second = unix_ms() / 1000;
        let keep = Duration::from_secs(10);
        let mut waiting = 0;
        for window in [second, second.saturating_sub(1)] {
            if let Ok(n) = self.op(rt, |s| s.add(&key, window, 0, keep)).await {
                waiting += n;
            }
        }
        waiting > 0
    }

    /// How long an idle connection holding a slot stays in the pool.
    pub(crate) fn idle_hold(&self) -> Option<Duration> {
        self.sharing
            .limits
            .connections
            .map(|_| self.sharing.idle_hold)
    }

    /// Times a message waited for the next window.
    pub(crate) fn rolls(&self) -> u64 {
        self.rolls.load(Ordering::Relaxed)
    }
}

fn nonce() -> [u8; 24] {
    let mut n = [0u8; 24];
    let _ = getrandom::fill(&mut n);
    n
}

pub(crate) fn jitter_ms(max: u64) -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b) % max.max(1)
}

pub(crate) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
