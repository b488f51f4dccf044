//! postern-oauth: a sans-IO OAuth2 token endpoint client.
//!
//! It builds token requests as complete HTTP/1.1 bytes, reads responses with
//! an incremental bounded parser, classifies them into typed outcomes with a
//! diagnosis an admin can act on, and caches tokens with refresh-ahead. It
//! does no IO, reads no clock and has no RNG: time, wall-clock seconds (for
//! JWT `iat`) and random bytes (PKCE, `state`, `jti`) are arguments.
//!
//! # The flow
//!
//! ```
//! use std::time::Instant;
//! use postern_oauth::{
//!     classify, CacheConfig, ClientAuth, Grant, Outcome, Provider, ResponseParser, Secret,
//!     TokenCache, TokenRequest,
//! };
//!
//! let provider = Provider::Microsoft { tenant: "contoso.onmicrosoft.com".into(), cloud: Default::default() };
//! let mut cache = TokenCache::new(CacheConfig::default(), None);
//! let now = Instant::now();
//! let lookup = cache.lookup(now);
//! let fetch = lookup.fetch.expect("an empty cache asks this caller to fetch");
//! let request = TokenRequest::new(
//!     provider.token_endpoint(false).unwrap(),
//!     "00000000-1111-2222-3333-444444444444",
//!     ClientAuth::SecretPost(Secret::new("client secret value")),
//!     Grant::ClientCredentials,
//! )
//! .scope(provider.default_scope(true).unwrap());
//! let http = request.to_http();
//! // ... connect to http.endpoint over TLS, write http.bytes, and feed every
//! // byte read to a ResponseParser:
//! let mut parser = ResponseParser::default();
//! let response = parser
//!     .push(b"HTTP/1.1 200 OK\r\nContent-Length: 60\r\n\r\n{\"token_type\":\"Bearer\",\"expires_in\":3599,\"access_token\":\"x\"}")
//!     .unwrap()
//!     .unwrap();
//! match classify(&response, None) {
//!     Outcome::Token(token) => { cache.handle_token(Instant::now(), fetch, token); }
//!     other => panic!("{other:?}"),
//! }
//! assert!(cache.lookup(Instant::now()).token.is_some());
//! ```
//!
//! # Modules
//!
//! - [`request`]: grants (client credentials, authorization code + PKCE,
//!   refresh token, device code, JWT bearer) and client authentication
//!   (`client_secret_post`, `client_secret_basic`, `private_key_jwt`, none).
//! - [`http`]: the response parser; [`response`]: classification.
//! - [`diagnose`]: stable diagnosis ids and fixes; [`mod@preflight`]: what the
//!   claims of a Microsoft access token say before the SMTP server does.
//! - [`cache`]: the token cache; [`device`]: device-flow polling.
//! - [`authorize`], [`pkce`]: the browser half of the code flow.
//! - [`jwt`]: assertions (signed by a caller's [`jwt::Signer`]) and the
//!   unverified claims decoding used for pre-flight checks.
//! - [`provider`]: Microsoft, Google and generic presets.

#![forbid(unsafe_code)]

pub mod authorize;
pub mod cache;
pub mod device;
pub mod diagnose;
pub mod form;
pub mod http;
pub mod jwt;
pub mod pkce;
pub mod preflight;
pub mod provider;
pub mod proxy;
pub mod request;
pub mod response;
pub mod shared;
pub mod url;

pub use authorize::{AuthorizationRequest, RedirectError, parse_redirect};
pub use cache::{AccessToken, CacheConfig, CacheEvent, Fetch, FetchError, Lookup, TokenCache};
pub use device::DevicePoll;
pub use http::{HttpError, HttpLimits, HttpResponse, ResponseParser};
pub use pkce::Pkce;
pub use postern_common::{Diagnosis, SHOWN_CHARS, Secret, Stage, sanitize, sanitize_bytes};
pub use preflight::{GrantKind, preflight};
pub use provider::{Endpoints, MicrosoftCloud, Provider};
pub use proxy::{Proxy, ProxyError, parse_connect_reply};
pub use request::{ClientAuth, Grant, HttpRequest, TokenRequest};
pub use response::{
    DeviceAuthorization, OAuthError, Outcome, ProtocolError, TokenResponse, classify,
    classify_device_authorization,
};
pub use url::{Endpoint, UrlError};
