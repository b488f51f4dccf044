//! HTTP/1.1 exchanges with OAuth2 endpoints over rustls: the token request
//! of the provider, and the one-shot exchanges a command-line authorization
//! or set-up check needs. The bytes come from postern-oauth and every byte
//! read goes to its bounded response parser.

use std::sync::Arc;
use std::time::Duration;

use postern_oauth::{
    CacheEvent, FetchError, HttpLimits, HttpResponse, Outcome, ResponseParser, Secret, TokenCache,
    TokenResponse, classify,
};

use crate::error::Error;
use crate::io::{read, write_all};
use crate::oauth2::{OAuth2, TokenGrant};
use crate::runtime::{Runtime, until};
use crate::tls::server_name;

/// One token request for `config`, classified.
pub(crate) async fn request_token<R: Runtime>(
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
            Outcome::ProtocolError(p) => Err(FetchError::Protocol(p)),
            other => Err(FetchError::Transport(format!(
                "unexpected token endpoint answer: {other:?}"
            ))),
        },
    }
}

/// Fetches one access token for `oauth`, outside the transport's cache:
/// what a command-line `token` check or a set-up diagnosis needs (the whole
/// response, lifetime included). Certificates are checked with `tls`.
///
/// A refresh token is redeemed once. When the server rotates it, the new
/// one goes to [`OAuth2::on_refresh_token_rotated`] before this returns (a
/// one-shot cache of the OAuth core decides, as for the transport), so the
/// stored authorization never holds a token the server already retired.
pub async fn fetch_token<R: Runtime>(
    rt: &R,
    tls: &crate::tls::TlsOptions,
    oauth: &OAuth2,
) -> Result<TokenResponse, Error> {
    let config = tls.client_config()?;
    let refresh = match &oauth.grant {
        TokenGrant::RefreshToken(r) => Some(r.clone()),
        _ => None,
    };
    let mut cache = TokenCache::new(oauth.cache, refresh);
    let Some(fetch) = cache.lookup(rt.now()).fetch else {
        return Err(Error::Config(
            "the token cache asked for no fetch".to_owned(),
        ));
    };
    let response = request_token(rt, &config, oauth, cache.refresh_token()).await?;
    cache.handle_token(rt.now(), fetch, response.clone());
    while let Some(event) = cache.poll_event() {
        if let (CacheEvent::RefreshTokenRotated(new), Some(hook)) = (event, &oauth.on_rotation) {
            hook(new);
        }
    }
    Ok(response)
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
