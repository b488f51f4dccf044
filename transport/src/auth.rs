//! Credentials, and the OAuth2 token provider shared by every connection of a
//! transport.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use event_listener::Event as Notify;
use postern_oauth::{
    CacheConfig, CacheEvent, ClientAuth, Endpoint, FetchError, Grant, HttpLimits, HttpResponse,
    MicrosoftCloud, Outcome, Provider, ResponseParser, Secret, TokenCache, TokenRequest,
    TokenResponse, classify,
};

use crate::error::Error;
use crate::io::{read, write_all};
use crate::runtime::{Runtime, until};
use crate::tls::server_name;

/// How the transport authenticates to the SMTP server.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Auth {
    /// No AUTH (a relay that trusts the client's address).
    #[default]
    None,
    /// PLAIN or LOGIN with a password.
    Password {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
    /// XOAUTH2 or OAUTHBEARER with a token the caller obtained. It is never
    /// refreshed: a rejection is final.
    BearerToken {
        /// The mailbox the token is for.
        user: String,
        /// The access token.
        token: Secret,
    },
    /// XOAUTH2 or OAUTHBEARER with tokens fetched, cached and refreshed by the
    /// transport.
    OAuth2(Box<OAuth2>),
}

/// A signed JWT produced on demand (Microsoft certificate credentials, Google
/// service accounts): called with the current Unix time for every token
/// request, because assertions are short-lived.
#[derive(Clone)]
pub struct Assertion(Arc<dyn Fn(u64) -> Result<Secret, String> + Send + Sync>);

impl Assertion {
    /// Wraps a function returning a fresh signed assertion for `unix_now`.
    pub fn new(f: impl Fn(u64) -> Result<Secret, String> + Send + Sync + 'static) -> Self {
        Assertion(Arc::new(f))
    }
}

impl fmt::Debug for Assertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Assertion([signer])")
    }
}

/// How the client authenticates to the token endpoint.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ClientCredential {
    /// A public client: only the client id.
    None,
    /// `client_secret` in the form body (what Entra and Google document).
    SecretPost(Secret),
    /// `client_secret` in an HTTP Basic header.
    SecretBasic(Secret),
    /// `private_key_jwt`: a client assertion signed per request.
    Assertion(Assertion),
}

/// Which grant the transport uses to get access tokens.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum TokenGrant {
    /// `client_credentials` (app-only, e.g. Microsoft `SMTP.SendAsApp`).
    ClientCredentials,
    /// `refresh_token`: a user's delegated consent. A rotated refresh token
    /// is used from then on and reported to [`OAuth2::on_refresh_token_rotated`].
    RefreshToken(Secret),
    /// RFC 7523 JWT bearer (Google service accounts with domain-wide
    /// delegation).
    JwtBearer(Assertion),
}

/// OAuth2 settings for one credential set: one token cache per transport.
#[derive(Clone)]
pub struct OAuth2 {
    user: String,
    endpoint: Endpoint,
    client_id: Option<String>,
    client: ClientCredential,
    grant: TokenGrant,
    scope: Option<String>,
    cache: CacheConfig,
    request_timeout: Duration,
    http_limits: HttpLimits,
    extra: Vec<(String, String)>,
    on_rotation: Option<Arc<dyn Fn(Secret) + Send + Sync>>,
}

impl fmt::Debug for OAuth2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2")
            .field("user", &self.user)
            .field("endpoint", &self.endpoint.as_str())
            .field("client_id", &self.client_id)
            .field("client", &self.client)
            .field("grant", &self.grant)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl OAuth2 {
    /// Any OAuth2 server. `user` is the mailbox put in the SASL message.
    pub fn new(
        user: impl Into<String>,
        endpoint: Endpoint,
        client_id: Option<String>,
        client: ClientCredential,
        grant: TokenGrant,
    ) -> Self {
        OAuth2 {
            user: user.into(),
            endpoint,
            client_id,
            client,
            grant,
            scope: None,
            cache: CacheConfig::default(),
            request_timeout: Duration::from_secs(30),
            http_limits: HttpLimits::default(),
            extra: Vec::new(),
            on_rotation: None,
        }
    }

    /// Microsoft 365, app-only: client credentials with a client secret, scope
    /// `https://outlook.office365.com/.default` (the app needs the
    /// `SMTP.SendAsApp` permission and a mailbox permission for `mailbox`).
    pub fn microsoft_app(
        tenant: &str,
        client_id: &str,
        client_secret: Secret,
        mailbox: &str,
    ) -> Result<Self, Error> {
        Self::microsoft_app_in(
            tenant,
            MicrosoftCloud::Global,
            client_id,
            client_secret,
            mailbox,
        )
    }

    /// [`OAuth2::microsoft_app`] in another cloud (US Government, China).
    pub fn microsoft_app_in(
        tenant: &str,
        cloud: MicrosoftCloud,
        client_id: &str,
        client_secret: Secret,
        mailbox: &str,
    ) -> Result<Self, Error> {
        let provider = Provider::Microsoft {
            tenant: tenant.to_owned(),
            cloud,
        };
        let endpoint = provider
            .token_endpoint(false)
            .map_err(|e| Error::Config(format!("Microsoft token URL: {e}")))?;
        let mut o = OAuth2::new(
            mailbox,
            endpoint,
            Some(client_id.to_owned()),
            ClientCredential::SecretPost(client_secret),
            TokenGrant::ClientCredentials,
        );
        o.scope = provider.default_scope(true);
        Ok(o)
    }

    /// Google (Gmail / Workspace), delegated: a refresh token obtained once with
    /// the `https://mail.google.com/` scope.
    pub fn google_refresh_token(
        client_id: &str,
        client_secret: Secret,
        refresh_token: Secret,
        mailbox: &str,
    ) -> Result<Self, Error> {
        let endpoint = Provider::Google
            .token_endpoint(false)
            .map_err(|e| Error::Config(format!("Google token URL: {e}")))?;
        Ok(OAuth2::new(
            mailbox,
            endpoint,
            Some(client_id.to_owned()),
            ClientCredential::SecretPost(client_secret),
            TokenGrant::RefreshToken(refresh_token),
        ))
    }

    /// Any OAuth2 server, client credentials grant. `token_url` must be https
    /// unless `allow_http_on_loopback` is set and the host is a loopback
    /// address.
    pub fn client_credentials(
        token_url: &str,
        allow_http_on_loopback: bool,
        client_id: &str,
        client: ClientCredential,
        user: &str,
    ) -> Result<Self, Error> {
        let endpoint = Endpoint::parse_with(token_url, allow_http_on_loopback)
            .map_err(|e| Error::Config(format!("token URL {token_url:?}: {e}")))?;
        Ok(OAuth2::new(
            user,
            endpoint,
            Some(client_id.to_owned()),
            client,
            TokenGrant::ClientCredentials,
        ))
    }

    /// Sets the scope (space-separated).
    #[must_use]
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Adds a form parameter to every token request (for example RFC 8707
    /// `resource`, which some servers use to choose JWT access tokens).
    #[must_use]
    pub fn extra_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((name.into(), value.into()));
        self
    }

    /// Sets the token cache policy (refresh-ahead, backoff).
    #[must_use]
    pub fn cache_config(mut self, config: CacheConfig) -> Self {
        self.cache = config;
        self
    }

    /// Bounds one token request (connect, TLS, request, response); default 30 s.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Calls `hook` with the new refresh token when the server rotates it.
    /// Persist it before the next request: the old one may stop working.
    #[must_use]
    pub fn on_refresh_token_rotated(
        mut self,
        hook: impl Fn(Secret) + Send + Sync + 'static,
    ) -> Self {
        self.on_rotation = Some(Arc::new(hook));
        self
    }

    /// The SASL user.
    #[must_use]
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The token endpoint.
    #[must_use]
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The token request for the current state (fresh assertions are signed
    /// here, with `unix_now`).
    pub fn token_request(
        &self,
        refresh_token: Option<&Secret>,
        unix_now: u64,
    ) -> Result<TokenRequest, String> {
        let client_auth = match &self.client {
            ClientCredential::None => ClientAuth::None,
            ClientCredential::SecretPost(s) => ClientAuth::SecretPost(s.clone()),
            ClientCredential::SecretBasic(s) => ClientAuth::SecretBasic(s.clone()),
            ClientCredential::Assertion(a) => ClientAuth::PrivateKeyJwt((a.0)(unix_now)?),
        };
        let grant = match &self.grant {
            TokenGrant::ClientCredentials => Grant::ClientCredentials,
            TokenGrant::RefreshToken(initial) => Grant::RefreshToken {
                refresh_token: refresh_token.unwrap_or(initial).clone(),
            },
            TokenGrant::JwtBearer(a) => Grant::JwtBearer {
                assertion: (a.0)(unix_now)?,
            },
        };
        Ok(TokenRequest {
            endpoint: self.endpoint.clone(),
            client_id: self.client_id.clone(),
            client_auth,
            grant,
            scope: self.scope.clone(),
            extra: self.extra.clone(),
            user_agent: None,
        })
    }
}

/// The token cache of one transport, with single flight across tasks.
pub(crate) struct TokenProvider {
    config: OAuth2,
    tls: Arc<rustls::ClientConfig>,
    state: Mutex<ProviderState>,
    changed: Notify,
    fetches: AtomicU64,
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
    pub(crate) fn new(config: OAuth2, tls: Arc<rustls::ClientConfig>) -> Self {
        let refresh = match &config.grant {
            TokenGrant::RefreshToken(r) => Some(r.clone()),
            _ => None,
        };
        TokenProvider {
            state: Mutex::new(ProviderState {
                cache: TokenCache::new(config.cache, refresh),
                generation: 0,
            }),
            config,
            tls,
            changed: Notify::new(),
            fetches: AtomicU64::new(0),
        }
    }

    pub(crate) fn user(&self) -> &str {
        &self.config.user
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
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let refresh = self.lock().cache.refresh_token().cloned();
        let result = request_token(rt, &self.tls, &self.config, refresh.as_ref()).await;
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

/// One token request for `config`, classified.
async fn request_token<R: Runtime>(
    rt: &R,
    tls: &Arc<rustls::ClientConfig>,
    config: &OAuth2,
    refresh: Option<&Secret>,
) -> Result<TokenResponse, FetchError> {
    let request = config
        .token_request(refresh, rt.unix_now())
        .map_err(|e| FetchError::Transport(format!("cannot sign the assertion: {e}")))?;
    let deadline = rt.now() + config.request_timeout;
    let http = request.to_http();
    match until(rt, deadline, exchange(rt, tls, &http, config.http_limits)).await {
        None => Err(FetchError::TimedOut),
        Some(Err(e)) => Err(FetchError::Transport(e)),
        Some(Ok(response)) => match classify(&response, Some(rt.unix_now())) {
            Outcome::Token(t) => Ok(t),
            Outcome::OAuthError(e) => Err(FetchError::OAuth(e)),
            Outcome::Retry { status, after, .. } => Err(FetchError::Retry { status, after }),
            Outcome::ProtocolError(p) => Err(FetchError::Transport(p.to_string())),
            other => Err(FetchError::Transport(format!(
                "unexpected token endpoint answer: {other:?}"
            ))),
        },
    }
}

/// Fetches one access token for `oauth`, outside any cache: what a
/// command-line `token` check or a set-up diagnosis needs (the whole
/// response, lifetime included). Certificates are checked with `tls`.
pub async fn fetch_token<R: Runtime>(
    rt: &R,
    tls: &crate::tls::TlsOptions,
    oauth: &OAuth2,
) -> Result<TokenResponse, Error> {
    let config = tls.client_config()?;
    request_token(rt, &config, oauth, None)
        .await
        .map_err(Error::from)
}

/// One HTTP/1.1 exchange with an OAuth2 endpoint (token, device
/// authorization, revocation), bounded by `timeout`: for flows the transport
/// does not run itself, such as a command-line authorization. The response
/// is returned as is; classify it with `postern_oauth::classify`.
pub async fn http_exchange<R: Runtime>(
    rt: &R,
    tls: &crate::tls::TlsOptions,
    request: &postern_oauth::HttpRequest,
    timeout: Duration,
) -> Result<HttpResponse, Error> {
    let config = tls.client_config()?;
    let deadline = rt.now() + timeout;
    match until(
        rt,
        deadline,
        exchange(rt, &config, request, HttpLimits::default()),
    )
    .await
    {
        None => Err(FetchError::TimedOut.into()),
        Some(Err(e)) => Err(FetchError::Transport(e).into()),
        Some(Ok(r)) => Ok(r),
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

/// One HTTP/1.1 exchange with the token endpoint (`Connection: close`).
pub(crate) async fn exchange<R: Runtime>(
    rt: &R,
    tls: &Arc<rustls::ClientConfig>,
    request: &postern_oauth::HttpRequest,
    limits: HttpLimits,
) -> Result<HttpResponse, String> {
    let ep = &request.endpoint;
    let tcp = rt
        .connect(ep.host(), ep.port())
        .await
        .map_err(|e| format!("cannot connect to {}:{}: {e}", ep.host(), ep.port()))?;
    if ep.is_tls() {
        let name = server_name(ep.host()).map_err(|e| e.to_string())?;
        let mut stream = rt
            .tls_connect(Arc::clone(tls), name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {} failed: {e}", ep.host()))?;
        roundtrip(&mut stream, &request.bytes, limits).await
    } else {
        let mut stream = tcp;
        roundtrip(&mut stream, &request.bytes, limits).await
    }
}

async fn roundtrip<S: crate::runtime::Stream>(
    stream: &mut S,
    bytes: &[u8],
    limits: HttpLimits,
) -> Result<HttpResponse, String> {
    write_all(stream, bytes)
        .await
        .map_err(|e| format!("sending the token request failed: {e}"))?;
    let mut parser = ResponseParser::new(limits);
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        let n = read(stream, &mut buf)
            .await
            .map_err(|e| format!("reading the token response failed: {e}"))?;
        if n == 0 {
            return parser.finish().map_err(|e| e.to_string());
        }
        if let Some(response) = parser.push(&buf[..n]).map_err(|e| e.to_string())? {
            return Ok(response);
        }
    }
}
