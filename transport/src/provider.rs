//! The token provider: one [`postern_oauth::TokenCache`] per transport,
//! single flight across tasks, refresh ahead of expiry in the background, and
//! invalidation by token generation when the SMTP server rejects a token.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use event_listener::Event as Notify;
use postern_oauth::{CacheEvent, FetchError, Secret, TokenCache};

use crate::error::Error;
use crate::http::request_token;
use crate::oauth2::{OAuth2, TokenGrant};
use crate::runtime::{Runtime, until};
use crate::sharing::{Coordinator, Fetched};

/// The token cache of one transport, with single flight across tasks.
pub(crate) struct TokenProvider {
    config: OAuth2,
    tls: Arc<rustls::ClientConfig>,
    state: Mutex<ProviderState>,
    changed: Notify,
    fetches: AtomicU64,
    /// The shared store's coordinator and this credential set's record key.
    shared: Option<(Arc<Coordinator>, String)>,
}

struct ProviderState {
    cache: TokenCache,
    /// Bumped for every token stored, so that a rejection of an old token
    /// does not throw away a newer one.
    generation: u64,
}

/// A token and the generation it belongs to.
pub(crate) struct Issued {
    pub(crate) token: Secret,
    pub(crate) generation: u64,
}

impl TokenProvider {
    pub(crate) fn new(
        config: OAuth2,
        tls: Arc<rustls::ClientConfig>,
        shared: Option<Arc<Coordinator>>,
    ) -> Self {
        let refresh = match &config.grant {
            TokenGrant::RefreshToken(r) => Some(r.clone()),
            _ => None,
        };
        let shared = shared.map(|c| {
            let grant = match &config.grant {
                TokenGrant::RefreshToken(_) => "refresh_token",
                TokenGrant::ClientCredentials => "client_credentials",
                TokenGrant::JwtBearer(_) => "jwt_bearer",
            };
            let key = c.token_key(&[
                config.endpoint.as_str(),
                config.client_id.as_deref().unwrap_or(""),
                &config.user,
                config.scope.as_deref().unwrap_or(""),
                grant,
            ]);
            (c, key)
        });
        TokenProvider {
            state: Mutex::new(ProviderState {
                cache: TokenCache::new(config.cache, refresh),
                generation: 0,
            }),
            config,
            tls,
            changed: Notify::new(),
            fetches: AtomicU64::new(0),
            shared,
        }
    }

    pub(crate) fn user(&self) -> &str {
        &self.config.user
    }

    /// When the cached token expires, if there is one.
    pub(crate) fn expires_at<R: Runtime>(&self, rt: &R) -> Option<std::time::Instant> {
        self.lock()
            .cache
            .lookup(rt.now())
            .token
            .map(|t| t.expires_at)
    }

    /// Token requests sent so far.
    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, ProviderState> {
        // A panic while holding the lock cannot leave the cache half-updated
        // in a way that matters more than losing the token: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A valid token: the cached one, or one fetched now (one fetch at a time
    /// for all tasks; the others wait for it). A token due for refresh is
    /// returned at once while a background task fetches the next one.
    pub(crate) async fn token<R: Runtime>(self: &Arc<Self>, rt: &R) -> Result<Issued, Error> {
        loop {
            let listener = self.changed.listen();
            let (lookup, generation, wait_until) = {
                let mut s = self.lock();
                let now = rt.now();
                let lookup = s.cache.lookup(now);
                (lookup, s.generation, s.cache.poll_timeout())
            };
            match (lookup.token, lookup.fetch) {
                (Some(token), fetch) => {
                    if let Some(fetch) = fetch {
                        tracing::debug!("refreshing the access token ahead of expiry");
                        let me = Arc::clone(self);
                        let rt2 = rt.clone();
                        rt.spawn(async move { me.fetch(&rt2, fetch).await });
                    }
                    return Ok(Issued {
                        token: token.token,
                        generation,
                    });
                }
                (None, Some(fetch)) => self.fetch(rt, fetch).await,
                (None, None) => {
                    if let Some(error) = lookup.last_error.filter(|_| !self.lock().cache.fetching())
                    {
                        return Err(error.into());
                    }
                    // Another task is fetching (or a backoff ends): wait for
                    // its report, or for the cache's own deadline.
                    let deadline = match (wait_until, lookup.retry_at) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    match deadline {
                        Some(at) => {
                            if until(rt, at, listener).await.is_none() {
                                self.handle_timeout(rt);
                            }
                        }
                        None => listener.await,
                    }
                }
            }
        }
    }

    /// Starts a background fetch when the cached token is due for refresh
    /// (called on every send, so a busy transport never waits for a token
    /// when it opens a new connection). Never waits.
    pub(crate) fn warm<R: Runtime>(self: &Arc<Self>, rt: &R) {
        let lookup = {
            let mut s = self.lock();
            if s.cache.fetching() {
                return;
            }
            let now = rt.now();
            s.cache.lookup(now)
        };
        if let Some(fetch) = lookup.fetch {
            let me = Arc::clone(self);
            let rt2 = rt.clone();
            rt.spawn(async move { me.fetch(&rt2, fetch).await });
        }
    }

    fn handle_timeout<R: Runtime>(self: &Arc<Self>, rt: &R) {
        let fetch = self.lock().cache.handle_timeout(rt.now());
        self.changed.notify(usize::MAX);
        if let Some(fetch) = fetch {
            let me = Arc::clone(self);
            let rt2 = rt.clone();
            rt.spawn(async move { me.fetch(&rt2, fetch).await });
        }
    }

    /// The SMTP server rejected the token of `generation`: drop it unless a
    /// newer one is already cached.
    pub(crate) fn invalidate<R: Runtime>(&self, rt: &R, generation: u64) {
        let mut s = self.lock();
        if s.generation == generation {
            s.cache.invalidate(rt.now());
        }
    }

    /// Carries out one fetch ticket and reports it to the cache.
    async fn fetch<R: Runtime>(self: &Arc<Self>, rt: &R, fetch: postern_oauth::Fetch) {
        let mut guard = Report {
            provider: self,
            fetch,
            rt,
            done: false,
        };
        let result = match &self.shared {
            Some((coordinator, key)) => self.fetch_shared(rt, coordinator, key).await,
            None => self.request(rt).await,
        };
        let rotated = {
            let mut s = self.lock();
            let now = rt.now();
            match result {
                Ok(token) => {
                    tracing::info!(
                        expires_in = token.expires_in.map(|d| d.as_secs()),
                        "access token fetched"
                    );
                    if s.cache.handle_token(now, fetch, token) {
                        s.generation += 1;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "token request failed");
                    s.cache.handle_failure(now, fetch, error);
                }
            }
            let mut rotated = Vec::new();
            while let Some(event) = s.cache.poll_event() {
                match event {
                    CacheEvent::RefreshTokenRotated(r) => rotated.push(r),
                    other => tracing::debug!(?other, "token cache event"),
                }
            }
            rotated
        };
        guard.done = true;
        drop(guard);
        if let Some(hook) = &self.config.on_rotation {
            for r in rotated {
                hook(r);
            }
        }
        self.changed.notify(usize::MAX);
    }
}

impl TokenProvider {
    /// One token request with the local cache's refresh token.
    async fn request<R: Runtime>(
        &self,
        rt: &R,
    ) -> Result<postern_oauth::TokenResponse, FetchError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let refresh = self.lock().cache.refresh_token().cloned();
        request_token(rt, &self.tls, &self.config, refresh.as_ref()).await
    }

    /// Through the shared store: adopt another process's token, or fetch
    /// under the store's lease. When the store is unavailable, a credential
    /// of this process's own fetches alone; a refresh token is not redeemed
    /// without the store, since another process may hold a newer copy and
    /// redeeming a stale one can revoke the grant.
    async fn fetch_shared<R: Runtime>(
        &self,
        rt: &R,
        coordinator: &Coordinator,
        key: &str,
    ) -> Result<postern_oauth::TokenResponse, FetchError> {
        // The latest refresh token this process knows (the configured one,
        // or a later one it fetched or adopted): it seeds an empty record.
        let configured = match &self.config.grant {
            TokenGrant::RefreshToken(_) => self.lock().cache.refresh_token().cloned(),
            _ => None,
        };
        let deadline = rt.now() + self.config.cache.fetch_timeout;
        let fetched = coordinator
            .fetch_token(
                rt,
                key,
                configured.as_ref(),
                &self.config.cache,
                deadline,
                |redeem| async move {
                    self.fetches.fetch_add(1, Ordering::Relaxed);
                    request_token(rt, &self.tls, &self.config, redeem.as_ref()).await
                },
            )
            .await;
        match fetched {
            Fetched::Token(t) => Ok(t),
            Fetched::Failed(e) => Err(e),
            Fetched::Unavailable if configured.is_some() => Err(FetchError::Transport(
                "the shared token store is unavailable; the shared refresh token is redeemed \
                 only through it (a stale copy redeemed here could revoke it)"
                    .to_owned(),
            )),
            Fetched::Unavailable => self.request(rt).await,
        }
    }
}

/// Reports a fetch whose future was dropped before it finished, so waiting
/// tasks do not wait for the cache's fetch timeout.
struct Report<'a, R: Runtime> {
    provider: &'a TokenProvider,
    fetch: postern_oauth::Fetch,
    rt: &'a R,
    done: bool,
}

impl<R: Runtime> Drop for Report<'_, R> {
    fn drop(&mut self) {
        if !self.done {
            let now = self.rt.now();
            self.provider.lock().cache.handle_failure(
                now,
                self.fetch,
                FetchError::Transport("the token request was cancelled".to_owned()),
            );
            self.provider.changed.notify(usize::MAX);
        }
    }
}
