//! The token cache: a sans-IO state machine over time given as an argument.
//!
//! - Expiry counts from when the request was **sent** (`sent_at + expires_in`),
//!   so network delay never makes a token look fresher than it is.
//! - Refresh ahead: a new token is fetched `refresh_ahead` before expiry (or
//!   at the server's `refresh_in`), in the background: callers keep getting
//!   the valid token meanwhile.
//! - Single flight: one fetch at a time. [`TokenCache::lookup`] hands a
//!   [`Fetch`] ticket to exactly one caller; the others wait (or use the
//!   still-valid token).
//! - A failed refresh keeps serving the still-valid token; failures back off
//!   exponentially (and honour `Retry-After`).
//! - [`TokenCache::invalidate`] drops a token the SMTP server rejected.
//! - A rotated refresh token is reported as [`CacheEvent::RefreshTokenRotated`]
//!   before the new access token is served: persist it first.
//!
//! The driver: call [`TokenCache::lookup`]; with a ticket, build the request
//! (using [`TokenCache::refresh_token`] for the refresh grant), send it, and
//! report with [`TokenCache::handle_token`] or [`TokenCache::handle_failure`];
//! drain [`TokenCache::poll_event`]; wake at [`TokenCache::poll_timeout`] and
//! call [`TokenCache::handle_timeout`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::response::{OAuthError, ProtocolError, TokenResponse};
use postern_common::Diagnosis;
use postern_common::Secret;

/// Settings of a [`TokenCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Fetch a new token this long before expiry; default 5 minutes. For
    /// short-lived tokens at most half the lifetime is used.
    pub refresh_ahead: Duration,
    /// Lifetime assumed when the server sends no `expires_in`; default 1 hour.
    pub default_lifetime: Duration,
    /// A fetch not reported within this is taken as failed; default 60 s.
    pub fetch_timeout: Duration,
    /// First backoff after a failure; default 1 s, doubling.
    pub backoff_initial: Duration,
    /// Longest backoff; default 5 minutes.
    pub backoff_max: Duration,
    /// A token is not used when it expires within this margin; default 10 s.
    pub expiry_margin: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            refresh_ahead: Duration::from_secs(300),
            default_lifetime: Duration::from_secs(3600),
            fetch_timeout: Duration::from_secs(60),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            expiry_margin: Duration::from_secs(10),
        }
    }
}

/// A cached access token.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessToken {
    /// The token.
    pub token: Secret,
    /// When it expires (from the request's send time).
    pub expires_at: Instant,
    /// When a refresh starts.
    pub refresh_at: Instant,
}

/// A ticket to fetch a token: exactly one caller holds it at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub struct Fetch {
    id: u64,
    /// When the fetch began (the request's send time for expiry).
    pub sent_at: Instant,
}

/// What [`TokenCache::lookup`] says.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub struct Lookup {
    /// A valid token to use now, if there is one.
    pub token: Option<AccessToken>,
    /// When set, this caller must fetch a token now (in the background when
    /// `token` is also set) and report the result.
    pub fetch: Option<Fetch>,
    /// No token and no fetch for this caller: a fetch is in flight (wait for
    /// it), or failures back off until this instant.
    pub retry_at: Option<Instant>,
    /// The last failure, while there is no valid token.
    pub last_error: Option<FetchError>,
}

/// Why a fetch failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchError {
    /// The token endpoint gave an OAuth error.
    OAuth(OAuthError),
    /// The endpoint asked to retry later (HTTP 429/5xx), after this long.
    Retry {
        /// The HTTP status.
        status: u16,
        /// The server's delay.
        after: Option<Duration>,
    },
    /// The connection failed.
    Transport(String),
    /// The response was neither a token nor an OAuth error (an HTML page,
    /// a 404): usually a wrong token URL.
    Protocol(ProtocolError),
    /// The fetch was not reported within [`CacheConfig::fetch_timeout`].
    TimedOut,
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::OAuth(e) => e.fmt(f),
            FetchError::Retry { status, after } => {
                write!(f, "token endpoint busy (HTTP {status})")?;
                if let Some(a) = after {
                    write!(f, ", retry after {} s", a.as_secs())?;
                }
                Ok(())
            }
            FetchError::Transport(e) => write!(f, "token request failed: {e}"),
            FetchError::Protocol(e) => write!(f, "token request failed: {e}"),
            FetchError::TimedOut => f.write_str("token request timed out"),
        }
    }
}

impl std::error::Error for FetchError {}

impl FetchError {
    /// `true` when the same request may succeed later unchanged: the
    /// endpoint was busy or unreachable, or said so (`temporarily_unavailable`).
    /// A wrong secret, a dead refresh token or a wrong URL is not.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::OAuth(e) => e.retryable(),
            FetchError::Protocol(p) => p.diagnosis.is_none() && p.status >= 500,
            FetchError::Retry { .. } | FetchError::Transport(_) | FetchError::TimedOut => true,
        }
    }

    /// `true` when the server refused the refresh token itself
    /// (`invalid_grant` to a refresh grant): it is retired, and only another
    /// authorization (or a newer token) can take its place.
    #[must_use]
    pub fn retires_refresh_token(&self) -> bool {
        matches!(self, FetchError::OAuth(e) if e.error == "invalid_grant")
    }

    /// The admin diagnosis, when the failure is a known one.
    #[must_use]
    pub fn diagnosis(&self) -> Option<Diagnosis> {
        match self {
            FetchError::OAuth(e) => e.diagnosis(),
            FetchError::Protocol(p) => p.diagnosis.clone(),
            _ => None,
        }
    }

    /// Where the provider explains the error (see [`OAuthError::link`]).
    #[must_use]
    pub fn link(&self) -> Option<String> {
        match self {
            FetchError::OAuth(e) => e.link(),
            _ => None,
        }
    }
}

/// Something the owner of the cache must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheEvent {
    /// The server returned a new refresh token: persist it (atomically)
    /// before using the new access token; the old one may stop working.
    RefreshTokenRotated(Secret),
}

/// The cache for one credential set (client, scope, account).
#[derive(Debug)]
pub struct TokenCache {
    config: CacheConfig,
    token: Option<AccessToken>,
    refresh_token: Option<Secret>,
    in_flight: Option<Fetch>,
    next_id: u64,
    failures: u32,
    backoff_until: Option<Instant>,
    last_error: Option<FetchError>,
    events: VecDeque<CacheEvent>,
}

impl TokenCache {
    /// An empty cache; `refresh_token` is the stored one, for refresh grants.
    #[must_use]
    pub fn new(config: CacheConfig, refresh_token: Option<Secret>) -> Self {
        TokenCache {
            config,
            token: None,
            refresh_token,
            in_flight: None,
            next_id: 0,
            failures: 0,
            backoff_until: None,
            last_error: None,
            events: VecDeque::new(),
        }
    }

    /// The token to use now and whether this caller must fetch. Call it for
    /// every send; it never returns a token that expires within the margin.
    pub fn lookup(&mut self, now: Instant) -> Lookup {
        self.expire(now);
        let token = self.token.clone();
        let due = token.as_ref().is_none_or(|t| now >= t.refresh_at);
        let backing_off = self.backoff_until.is_some_and(|b| now < b);
        let fetch = (due && self.in_flight.is_none() && !backing_off).then(|| self.start(now));
        let retry_at = match (&token, fetch) {
            (None, None) => self
                .in_flight
                .map(|f| f.sent_at + self.config.fetch_timeout)
                .or(self.backoff_until),
            _ => None,
        };
        let last_error = if token.is_none() {
            self.last_error.clone()
        } else {
            None
        };
        Lookup {
            token,
            fetch,
            retry_at,
            last_error,
        }
    }

    /// The refresh token to use in a refresh grant (the latest one).
    #[must_use]
    pub fn refresh_token(&self) -> Option<&Secret> {
        self.refresh_token.as_ref()
    }

    /// Reports a token for `fetch`. A ticket that is no longer current (timed
    /// out, or superseded) is ignored, and `false` returned.
    pub fn handle_token(&mut self, now: Instant, fetch: Fetch, response: TokenResponse) -> bool {
        if self.in_flight != Some(fetch) {
            return false;
        }
        self.in_flight = None;
        self.failures = 0;
        self.backoff_until = None;
        self.last_error = None;
        if let Some(rt) = response.refresh_token {
            if self.refresh_token.as_ref() != Some(&rt) {
                self.events
                    .push_back(CacheEvent::RefreshTokenRotated(rt.clone()));
            }
            self.refresh_token = Some(rt);
        }
        let lifetime = response.expires_in.unwrap_or(self.config.default_lifetime);
        let expires_at = fetch.sent_at + lifetime;
        let ahead = self.config.refresh_ahead.min(lifetime / 2);
        let refresh_at = match response.refresh_in {
            Some(r) if r < lifetime => fetch.sent_at + r,
            _ => expires_at - ahead,
        };
        self.token = Some(AccessToken {
            token: response.access_token,
            expires_at,
            refresh_at,
        });
        self.expire(now);
        true
    }

    /// Reports a failed fetch. The still-valid token (if any) keeps being
    /// served; the next fetch waits for the backoff (or `Retry-After`).
    pub fn handle_failure(&mut self, now: Instant, fetch: Fetch, error: FetchError) -> bool {
        if self.in_flight != Some(fetch) {
            return false;
        }
        self.in_flight = None;
        self.fail(now, error);
        true
    }

    fn fail(&mut self, now: Instant, error: FetchError) {
        let exp = self.failures.min(16);
        self.failures = self.failures.saturating_add(1);
        let mut delay = self
            .config
            .backoff_initial
            .saturating_mul(1 << exp)
            .min(self.config.backoff_max);
        if let FetchError::Retry { after: Some(a), .. } = &error {
            delay = delay.max(*a);
        }
        self.backoff_until = Some(now + delay);
        self.last_error = Some(error);
    }

    /// The SMTP server rejected the current token: drop it, so that the next
    /// lookup fetches a new one (unless a fetch is in flight or failures back
    /// off). Call it once per rejection; never in a loop.
    pub fn invalidate(&mut self, now: Instant) {
        let _ = now;
        self.token = None;
    }

    /// The next instant at which [`TokenCache::handle_timeout`] has work: an
    /// in-flight fetch timing out, a refresh falling due, a token expiring, a
    /// backoff ending.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(f) = self.in_flight {
            consider(f.sent_at + self.config.fetch_timeout);
        }
        if let Some(t) = &self.token {
            if self.in_flight.is_none() {
                consider(
                    self.backoff_until
                        .map_or(t.refresh_at, |b| b.max(t.refresh_at)),
                );
            }
            consider(t.expires_at - self.config.expiry_margin.min(t.expires_at - t.refresh_at));
        } else if let Some(b) = self.backoff_until {
            consider(b);
        }
        next
    }

    /// Times out an unreported fetch, drops an expired token, and starts the
    /// background refresh when it is due: a returned [`Fetch`] must be carried
    /// out and reported like one from [`TokenCache::lookup`]. After it,
    /// [`TokenCache::poll_timeout`] is always later than `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Fetch> {
        if self
            .in_flight
            .is_some_and(|f| now >= f.sent_at + self.config.fetch_timeout)
        {
            self.in_flight = None;
            self.fail(now, FetchError::TimedOut);
        }
        self.expire(now);
        let due = self.token.as_ref().is_some_and(|t| now >= t.refresh_at);
        let backing_off = self.backoff_until.is_some_and(|b| now < b);
        (due && self.in_flight.is_none() && !backing_off).then(|| self.start(now))
    }

    fn start(&mut self, now: Instant) -> Fetch {
        let f = Fetch {
            id: self.next_id,
            sent_at: now,
        };
        self.next_id += 1;
        self.in_flight = Some(f);
        f
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<CacheEvent> {
        self.events.pop_front()
    }

    /// `true` while a fetch is in flight.
    #[must_use]
    pub fn fetching(&self) -> bool {
        self.in_flight.is_some()
    }

    fn expire(&mut self, now: Instant) {
        if let Some(t) = &self.token {
            let margin = self.config.expiry_margin.min(t.expires_at - t.refresh_at);
            if now + margin >= t.expires_at {
                self.token = None;
            }
        }
        if self.backoff_until.is_some_and(|b| now >= b) {
            self.backoff_until = None;
        }
    }
}

postern_common::setters!(CacheConfig {
    refresh_ahead: Duration,
    default_lifetime: Duration,
    fetch_timeout: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    expiry_margin: Duration
});
