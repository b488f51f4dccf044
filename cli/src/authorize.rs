//! `postern authorize`: get a user's refresh token once, with the
//! authorization code flow and PKCE (loopback redirect or pasted URL) or the
//! device flow, and store it in a file only the user can read.

use std::io::{BufRead, Write};
use std::time::Duration;

use clap::Args;
use postern_oauth::{
    AuthorizationRequest, ClientAuth, DevicePoll, Endpoint, Grant, Outcome, Pkce, Provider,
    TokenRequest, classify, classify_device_authorization, parse_redirect,
};
use postern_tokio::{Secret, Tokio};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{Settings, secret};
use crate::fail::{Class, Failure, usage};
use crate::setup;

/// Arguments of `postern authorize`.
#[derive(Args, Debug)]
pub(crate) struct AuthorizeArgs {
    #[command(flatten)]
    pub(crate) settings: Settings,
    /// Use the device flow (enter a code on another device).
    #[arg(long)]
    device: bool,
    /// Headless: print the URL, then paste the address the browser was sent
    /// to (the page will not load; copy it from the address bar).
    #[arg(long)]
    paste: bool,
    /// The redirect URI registered for the app when it is a web address
    /// (`https://app.example.com/oauth2/callback`): print the sign-in URL,
    /// then paste the address the browser ended on, or only the code. Use
    /// it with the app's client secret; PKCE is always used.
    #[arg(long, value_name = "URI", conflicts_with_all = ["device", "listen_port"])]
    redirect_uri: Option<String>,
    /// Loopback port for the redirect listener [default: any free port].
    #[arg(long, default_value_t = 0)]
    listen_port: u16,
    /// Device authorization endpoint (generic provider).
    #[arg(long)]
    device_url: Option<String>,
}

/// Runs `postern authorize`.
pub(crate) async fn run(args: AuthorizeArgs) -> Result<(), Failure> {
    let s = args.settings.clone().resolve()?;
    let store = s
        .refresh_token_file
        .clone()
        .ok_or_else(|| usage("--refresh-token-file says where to store the refresh token"))?;
    let (_, provider) = setup::provider(&s, true)?;
    let endpoints = provider.endpoints();
    let token_endpoint = Endpoint::parse_with(
        s.token_url.as_deref().unwrap_or(&endpoints.token),
        s.allow_http_token_url,
    )
    .map_err(|e| usage(format!("token URL: {e}")))?;
    let client_id = s
        .client_id
        .clone()
        .ok_or_else(|| usage("--client-id is required"))?;
    let client_auth = match secret(
        "client secret",
        s.client_secret_env.as_deref(),
        s.client_secret_file.as_deref(),
        false,
    )? {
        Some(v) if s.client_secret_basic => ClientAuth::SecretBasic(Secret::new(v)),
        Some(v) => ClientAuth::SecretPost(Secret::new(v)),
        None => ClientAuth::None,
    };
    let scope = s
        .scope
        .clone()
        .or_else(|| provider.default_scope(false))
        .ok_or_else(|| usage("--scope is required"))?;
    let tls = setup::tls_options(&s)?;
    let response = if args.device {
        let url = args
            .device_url
            .clone()
            .or(endpoints.device)
            .ok_or_else(|| usage("this provider has no device flow for mail; give --device-url or use the browser flow"))?;
        let device_endpoint = Endpoint::parse_with(&url, s.allow_http_token_url)
            .map_err(|e| usage(format!("device URL: {e}")))?;
        device_flow(
            &tls,
            &device_endpoint,
            token_endpoint,
            &client_id,
            client_auth,
            &scope,
        )
        .await?
    } else {
        let authorize = s
            .authorize_url
            .clone()
            .or(endpoints.authorize)
            .ok_or_else(|| usage("--authorize-url is required"))?;
        code_flow(
            &args,
            &s,
            &tls,
            &provider,
            &authorize,
            token_endpoint,
            &client_id,
            client_auth,
            &scope,
        )
        .await?
    };
    let refresh = response
        .refresh_token
        .ok_or_else(|| Failure {
            class: Class::Auth,
            message: "the server returned no refresh token (Microsoft: include offline_access in the scope; Google: consent again)".to_owned(),
            error: None,
        })?;
    setup::store_secret(&store, refresh.expose())
        .map_err(|e| usage(format!("cannot write {}: {e}", store.display())))?;
    eprintln!("refresh token stored in {} (mode 0600)", store.display());
    Ok(())
}

async fn token(tls: &postern_tokio::TlsOptions, request: TokenRequest) -> Result<Outcome, Failure> {
    let http = request.to_http();
    let response =
        postern_transport::http::http_exchange(&Tokio, tls, &http, Duration::from_secs(30)).await?;
    Ok(classify(&response, None))
}

fn outcome_error(o: Outcome) -> Failure {
    let message = match o {
        Outcome::OAuthError(e) => e.to_string(),
        Outcome::ProtocolError(p) => p.to_string(),
        other => format!("{other:?}"),
    };
    Failure {
        class: Class::Auth,
        message,
        error: None,
    }
}

#[allow(clippy::too_many_arguments)]
async fn code_flow(
    args: &AuthorizeArgs,
    s: &Settings,
    tls: &postern_tokio::TlsOptions,
    provider: &Provider,
    authorize: &str,
    token_endpoint: Endpoint,
    client_id: &str,
    client_auth: ClientAuth,
    scope: &str,
) -> Result<postern_oauth::TokenResponse, Failure> {
    let pkce = Pkce::from_random(setup::random::<32>()?);
    let state = postern_oauth::pkce::random_token(setup::random::<16>()?);
    if let Some(uri) = &args.redirect_uri
        && !(uri.starts_with("https://") || uri.starts_with("http://"))
    {
        return Err(usage(format!(
            "--redirect-uri {uri:?} must be the absolute http(s) address registered for the app"
        )));
    }
    let listener = if args.paste || args.redirect_uri.is_some() {
        None
    } else {
        Some(
            tokio::net::TcpListener::bind(("127.0.0.1", args.listen_port))
                .await
                .map_err(|e| usage(format!("cannot listen on 127.0.0.1: {e}")))?,
        )
    };
    let redirect_uri = match (&args.redirect_uri, &listener) {
        (Some(uri), _) => uri.clone(),
        (None, Some(l)) => format!(
            "http://127.0.0.1:{}/",
            l.local_addr().map_err(|e| usage(e.to_string()))?.port()
        ),
        (None, None) => "http://localhost/".to_owned(),
    };
    let mut request = AuthorizationRequest::new(
        authorize,
        client_id,
        redirect_uri.clone(),
        scope,
        state.clone(),
    );
    request.code_challenge = Some(pkce.challenge.clone());
    request.login_hint.clone_from(&s.user);
    request.extra = provider
        .offline_parameters()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    eprintln!(
        "Open this address in a browser and sign in:\n\n{}\n",
        request.url()
    );
    let redirect = match listener {
        Some(l) => {
            eprintln!("Waiting for the browser on {redirect_uri} ...");
            receive_redirect(l).await?
        }
        None => {
            eprint!("Paste the address the browser ended on (or only the code): ");
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| usage(format!("cannot read the address: {e}")))?;
            line
        }
    };
    let pasted = redirect.trim();
    let code = if !pasted.is_empty() && !pasted.contains(['=', '?', '/', ' ']) {
        // Only the code was pasted: there is no state to check, and the
        // code came from the admin's own browser.
        Secret::new(pasted)
    } else {
        parse_redirect(&redirect, &state).map_err(|e| Failure {
            class: Class::Auth,
            message: e.to_string(),
            error: None,
        })?
    };
    let mut req = TokenRequest::new(
        token_endpoint,
        client_id,
        client_auth,
        Grant::AuthorizationCode {
            code,
            redirect_uri,
            code_verifier: Some(pkce.verifier.clone()),
        },
    );
    req.scope = Some(scope.to_owned());
    match token(tls, req).await? {
        Outcome::Token(t) => Ok(t),
        other => Err(outcome_error(other)),
    }
}

/// Accepts the browser's redirect on the loopback listener; returns the
/// request target. The listener answers one request, then closes.
async fn receive_redirect(listener: tokio::net::TcpListener) -> Result<String, Failure> {
    loop {
        let (mut tcp, _) = listener.accept().await.map_err(|e| usage(e.to_string()))?;
        let mut buf = vec![0u8; 16 * 1024];
        let mut len = 0;
        while len < buf.len() {
            let n = tcp
                .read(&mut buf[len..])
                .await
                .map_err(|e| usage(e.to_string()))?;
            if n == 0 {
                break;
            }
            len += n;
            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let head = String::from_utf8_lossy(&buf[..len]).into_owned();
        let Some(target) = head.strip_prefix("GET ").and_then(|r| r.split(' ').next()) else {
            continue;
        };
        if !target.contains("code=") && !target.contains("error=") {
            // A favicon or a probe: not the redirect.
            let _ = tcp
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            continue;
        }
        let body = "postern: you can close this window and return to the terminal.\n";
        let _ = tcp
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
        return Ok(target.to_owned());
    }
}

async fn device_flow(
    tls: &postern_tokio::TlsOptions,
    device_endpoint: &Endpoint,
    token_endpoint: Endpoint,
    client_id: &str,
    client_auth: ClientAuth,
    scope: &str,
) -> Result<postern_oauth::TokenResponse, Failure> {
    let http = postern_oauth::request::device_authorization(
        device_endpoint,
        client_id,
        scope,
        &client_auth,
    );
    let response =
        postern_transport::http::http_exchange(&Tokio, tls, &http, Duration::from_secs(30)).await?;
    let auth = classify_device_authorization(&response).map_err(|o| outcome_error(*o))?;
    match &auth.message {
        Some(m) => eprintln!("{m}"),
        None => eprintln!(
            "Go to {} and enter the code {}",
            auth.verification_uri, auth.user_code
        ),
    }
    let mut poll = DevicePoll::new(&auth, std::time::Instant::now());
    loop {
        if poll.expired(std::time::Instant::now()) {
            return Err(Failure {
                class: Class::Auth,
                message: "the device code expired before the sign-in finished".to_owned(),
                error: None,
            });
        }
        if let Some(at) = poll.poll_timeout() {
            tokio::time::sleep_until(at.into()).await;
        }
        let req = TokenRequest::new(
            token_endpoint.clone(),
            client_id,
            client_auth.clone(),
            Grant::DeviceCode {
                device_code: auth.device_code.clone(),
            },
        );
        match token(tls, req).await? {
            Outcome::Token(t) => return Ok(t),
            Outcome::PollAgain { slow_down } => {
                poll.handle_poll_again(std::time::Instant::now(), slow_down)
            }
            other => return Err(outcome_error(other)),
        }
    }
}
