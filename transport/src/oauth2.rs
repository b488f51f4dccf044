//! The OAuth2 settings of a transport: how it authenticates to the SMTP
//! server, which grant and client credential it uses at the token endpoint,
//! and the Microsoft / Google / generic presets.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use postern_oauth::jwt::{KeyId, RsaSigner, bearer_grant_claims, client_assertion_claims, sign};
use postern_oauth::{
    CacheConfig, ClientAuth, Endpoint, Grant, GrantKind, HttpLimits, MicrosoftCloud, Provider,
    Proxy, Secret, TokenRequest,
};

use crate::error::Error;

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
/// service accounts): made afresh for every token request, because
/// assertions are short-lived.
#[derive(Clone)]
pub struct Assertion(AssertionFn);

type AssertionFn = Arc<dyn Fn(u64, &str) -> Result<Secret, String> + Send + Sync>;

impl Assertion {
    /// Wraps a function returning a fresh signed assertion for `unix_now`.
    pub fn new(f: impl Fn(u64) -> Result<Secret, String> + Send + Sync + 'static) -> Self {
        Assertion(Arc::new(move |now, _| f(now)))
    }

    /// Wraps a function returning a fresh signed assertion for `unix_now`
    /// and the audience `aud`: the token URL the request goes to, so the
    /// assertion follows [`OAuth2::with_endpoint`].
    pub fn for_audience(
        f: impl Fn(u64, &str) -> Result<Secret, String> + Send + Sync + 'static,
    ) -> Self {
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
    pub(crate) user: String,
    pub(crate) endpoint: Endpoint,
    pub(crate) client_id: Option<String>,
    pub(crate) client: ClientCredential,
    pub(crate) grant: TokenGrant,
    pub(crate) scope: Option<String>,
    pub(crate) cache: CacheConfig,
    pub(crate) request_timeout: Duration,
    pub(crate) http_limits: HttpLimits,
    pub(crate) extra: Vec<(String, String)>,
    pub(crate) on_rotation: Option<Arc<dyn Fn(Secret) + Send + Sync>>,
    pub(crate) proxy: Option<Proxy>,
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
            .field("proxy", &self.proxy)
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
            proxy: crate::http::env_proxy(),
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
        Self::microsoft_app_with(tenant, cloud, client_id, mailbox, |_| {
            Ok(ClientCredential::SecretPost(client_secret))
        })
    }

    /// Microsoft app-only with the client credential `credential` makes for
    /// the tenant's token URL.
    fn microsoft_app_with(
        tenant: &str,
        cloud: MicrosoftCloud,
        client_id: &str,
        mailbox: &str,
        credential: impl FnOnce(&Endpoint) -> Result<ClientCredential, Error>,
    ) -> Result<Self, Error> {
        let provider = Provider::Microsoft {
            tenant: tenant.to_owned(),
            cloud,
        };
        let endpoint = provider
            .token_endpoint(false)
            .map_err(|e| Error::Config(format!("Microsoft token URL: {e}")))?;
        let credential = credential(&endpoint)?;
        let mut o = OAuth2::new(
            mailbox,
            endpoint,
            Some(client_id.to_owned()),
            credential,
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

    /// Microsoft 365, app-only with a certificate credential: each token
    /// request carries a client assertion (RS256, `x5t` = the certificate's
    /// SHA-1 thumbprint as Entra shows it, in hex) signed with `key_pem`
    /// (PKCS #8 PEM RSA). No secret to expire or leak.
    pub fn microsoft_app_certificate(
        tenant: &str,
        client_id: &str,
        key_pem: &str,
        thumbprint_hex: &str,
        mailbox: &str,
    ) -> Result<Self, Error> {
        Self::microsoft_app_with(tenant, MicrosoftCloud::Global, client_id, mailbox, |_| {
            certificate_assertion(client_id, key_pem, thumbprint_hex)
        })
    }

    /// Google Workspace, a service account with domain-wide delegation,
    /// sending as `mailbox`: `key_json` is the account's JSON key file
    /// (`client_email`, `private_key`, `private_key_id`, `token_uri`); each
    /// token request carries an RFC 7523 assertion for the scope
    /// `https://mail.google.com/` with `sub` = `mailbox`.
    pub fn google_service_account(key_json: &str, mailbox: &str) -> Result<Self, Error> {
        let key: serde_json::Value = serde_json::from_str(key_json)
            .map_err(|e| Error::Config(format!("service account key: not JSON ({e})")))?;
        let field = |k: &str| {
            key.get(k)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| Error::Config(format!("service account key: no {k}")))
        };
        let issuer = field("client_email")?;
        let token_uri = field("token_uri").unwrap_or_else(|_| Provider::Google.endpoints().token);
        let kid = field("private_key_id").ok();
        let signer = RsaSigner::from_pkcs8_pem(&field("private_key")?)
            .map_err(|e| Error::Config(format!("service account key: {e}")))?;
        let endpoint = Endpoint::parse(&token_uri)
            .map_err(|e| Error::Config(format!("service account token_uri: {e}")))?;
        let subject = mailbox.to_owned();
        let scope = Provider::Google.default_scope(false).unwrap_or_default();
        let assertion = Assertion::for_audience(move |now, aud| {
            let claims = bearer_grant_claims(&issuer, &scope, aud, Some(&subject), now, 3600);
            let key_id = kid.clone().map_or(KeyId::None, KeyId::Kid);
            sign(&key_id, &claims, &signer).map_err(|e| e.to_string())
        });
        Ok(OAuth2::new(
            mailbox,
            endpoint,
            None,
            ClientCredential::None,
            TokenGrant::JwtBearer(assertion),
        ))
    }

    /// Reaches the token endpoint through `proxy` (a `CONNECT` tunnel), or
    /// directly with `None`. By default the proxy is the one `HTTPS_PROXY`
    /// names, except for the hosts in `NO_PROXY`.
    #[must_use]
    pub fn proxy(mut self, proxy: Option<Proxy>) -> Self {
        self.proxy = proxy;
        self
    }

    /// Sends token requests to `endpoint` instead of the preset's (a
    /// national cloud, a proxy endpoint, a test server).
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoint = endpoint;
        self
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

    /// Whether the tokens are the application's own or a user's delegated
    /// consent: what [`postern_oauth::preflight()`] checks them against.
    #[must_use]
    pub fn grant_kind(&self) -> GrantKind {
        match self.grant {
            TokenGrant::ClientCredentials => GrantKind::AppOnly,
            TokenGrant::RefreshToken(_) | TokenGrant::JwtBearer(_) => GrantKind::Delegated,
        }
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
            ClientCredential::Assertion(a) => {
                ClientAuth::PrivateKeyJwt((a.0)(unix_now, self.endpoint.as_str())?)
            }
        };
        let grant = match &self.grant {
            TokenGrant::ClientCredentials => Grant::ClientCredentials,
            TokenGrant::RefreshToken(initial) => Grant::RefreshToken {
                refresh_token: refresh_token.unwrap_or(initial).clone(),
            },
            TokenGrant::JwtBearer(a) => Grant::JwtBearer {
                assertion: (a.0)(unix_now, self.endpoint.as_str())?,
            },
        };
        let mut request = TokenRequest::new(self.endpoint.clone(), "", client_auth, grant);
        request.client_id.clone_from(&self.client_id);
        request.scope.clone_from(&self.scope);
        request.extra.clone_from(&self.extra);
        Ok(request)
    }
}

impl ClientCredential {
    /// A `private_key_jwt` client credential (RFC 7523): a fresh assertion
    /// for `client_id` for every request, its audience the token URL the
    /// request goes to, signed with the RSA key `key_pem` (PKCS #8), naming
    /// the certificate by its SHA-1 thumbprint (hex, `:` and spaces allowed)
    /// as Microsoft Entra wants. [`OAuth2::microsoft_app_certificate`] uses
    /// it.
    pub fn certificate(
        client_id: &str,
        key_pem: &str,
        thumbprint_hex: &str,
    ) -> Result<ClientCredential, Error> {
        certificate_assertion(client_id, key_pem, thumbprint_hex)
    }
}

fn certificate_assertion(
    client_id: &str,
    key_pem: &str,
    thumbprint_hex: &str,
) -> Result<ClientCredential, Error> {
    let digits: String = thumbprint_hex
        .chars()
        .filter(|c| !matches!(c, ':' | ' '))
        .collect();
    if digits.is_empty()
        || !digits.len().is_multiple_of(2)
        || !digits.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Err(Error::Config(
            "the certificate thumbprint must be hexadecimal".to_owned(),
        ));
    }
    let bytes: Vec<u8> = (0..digits.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&digits[i..i + 2], 16).ok())
        .collect();
    let x5t = URL_SAFE_NO_PAD.encode(bytes);
    let signer = RsaSigner::from_pkcs8_pem(key_pem)
        .map_err(|e| Error::Config(format!("certificate key: {e}")))?;
    let client_id = client_id.to_owned();
    Ok(ClientCredential::Assertion(Assertion::for_audience(
        move |now, aud| {
            let mut jti = [0u8; 16];
            getrandom::fill(&mut jti).map_err(|e| e.to_string())?;
            let claims = client_assertion_claims(
                &client_id,
                aud,
                &postern_oauth::pkce::random_token(jti),
                now,
                600,
            );
            sign(&KeyId::X5t(x5t.clone()), &claims, &signer).map_err(|e| e.to_string())
        },
    )))
}
