//! HTTP/1.1 exchanges with OAuth2 endpoints over rustls: the token request
//! of the provider, and the one-shot exchanges a command-line authorization
//! or set-up check needs. The bytes come from postern-oauth and every byte
//! read goes to its bounded response parser.

use std::sync::Arc;
use std::time::Duration;

use postern_oauth::{
    CacheEvent, FetchError, HttpLimits, HttpResponse, Outcome, Proxy, ResponseParser, Secret,
    TokenCache, TokenResponse, classify, parse_connect_reply,
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
    match until(
        rt,
        deadline,
        exchange(rt, tls, &http, config.http_limits, config.proxy.as_ref()),
    )
    .await
    {
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

/// A token through a shared store ([`crate::Sharing`]): the one another
/// process fetched when it is still fresh, else one fetched under the
/// store's lease. A refresh token shared by several processes must be
/// redeemed this way, never by [`fetch_token`] (which would retire the
/// store's copy).
pub async fn fetch_token_shared<R: Runtime>(
    rt: &R,
    tls: &crate::tls::TlsOptions,
    oauth: &OAuth2,
    sharing: crate::Sharing,
) -> Result<TokenResponse, Error> {
    let config = tls.client_config()?;
    let coordinator = std::sync::Arc::new(crate::sharing::Coordinator::new(sharing, &oauth.user));
    let provider = std::sync::Arc::new(crate::provider::TokenProvider::new(
        oauth.clone(),
        config,
        Some(coordinator),
    ));
    let issued = provider.token(rt).await?;
    let expires_in = provider
        .expires_at(rt)
        .map(|at| at.saturating_duration_since(rt.now()));
    Ok(TokenResponse::bearer(issued.token, expires_in))
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
        exchange(
            rt,
            &config,
            request,
            HttpLimits::default(),
            env_proxy().as_ref(),
        ),
    )
    .await
    {
        None => Err(FetchError::TimedOut.into()),
        Some(Err(e)) => Err(FetchError::Transport(e).into()),
        Some(Ok(r)) => Ok(r),
    }
}

/// One HTTP/1.1 exchange with the token endpoint (`Connection: close`). An
/// https endpoint is reached through `proxy` when one applies to its host:
/// a `CONNECT` tunnel, with TLS end to end inside it.
pub(crate) async fn exchange<R: Runtime>(
    rt: &R,
    tls: &Arc<rustls::ClientConfig>,
    request: &postern_oauth::HttpRequest,
    limits: HttpLimits,
    proxy: Option<&Proxy>,
) -> Result<HttpResponse, String> {
    let ep = &request.endpoint;
    let proxy = proxy.filter(|p| ep.is_tls() && p.applies_to(ep.host()));
    let tcp = match proxy {
        Some(p) => tunnel(rt, p, ep.host(), ep.port()).await?,
        None => rt
            .connect(ep.host(), ep.port())
            .await
            .map_err(|e| format!("cannot connect to {}:{}: {e}", ep.host(), ep.port()))?,
    };
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

/// A `CONNECT` tunnel through `proxy` to `host:port`; the proxy's answer is
/// read byte by byte so that nothing of the tunnel is read ahead.
async fn tunnel<R: Runtime>(
    rt: &R,
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> Result<R::Tcp, String> {
    let mut tcp = rt.connect(proxy.host(), proxy.port()).await.map_err(|e| {
        format!(
            "cannot connect to the proxy {}:{}: {e}",
            proxy.host(),
            proxy.port()
        )
    })?;
    write_all(&mut tcp, &proxy.connect_request(host, port))
        .await
        .map_err(|e| format!("sending CONNECT to the proxy failed: {e}"))?;
    let mut received = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = read(&mut tcp, &mut byte)
            .await
            .map_err(|e| format!("reading the proxy's answer failed: {e}"))?;
        if n == 0 {
            return Err("the proxy closed the connection instead of opening a tunnel".to_owned());
        }
        received.push(byte[0]);
        if parse_connect_reply(&received)
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Ok(tcp);
        }
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

/// The proxy `HTTPS_PROXY` (or `https_proxy`) names, minus `NO_PROXY`
/// hosts; `None` when unset or unusable (a bad value is logged).
pub(crate) fn env_proxy() -> Option<Proxy> {
    let var = |names: [&str; 2]| names.iter().find_map(|n| std::env::var(n).ok());
    match Proxy::from_env_values(
        var(["HTTPS_PROXY", "https_proxy"]).as_deref(),
        var(["NO_PROXY", "no_proxy"]).as_deref(),
    ) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "HTTPS_PROXY ignored");
            None
        }
    }
}
