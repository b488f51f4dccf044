//! An in-process OAuth2 token endpoint on loopback (plain HTTP/1.1, as
//! allowed on loopback): client credentials and refresh-token grants, client
//! secrets in the body or in HTTP Basic, Entra-shaped errors.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::tokens::Tokens;
use crate::{Background, lock};

/// Settings of a [`TokenServer`].
#[derive(Clone, Debug)]
pub struct TokenServerConfig {
    /// Registered clients: id and secret.
    pub clients: Vec<(String, String)>,
    /// Refresh tokens accepted by the refresh grant.
    pub refresh_tokens: Vec<String>,
    /// Where issued access tokens are recorded.
    pub tokens: Tokens,
    /// `expires_in` of issued tokens, seconds.
    pub lifetime_secs: u64,
    /// Delay before each answer.
    pub delay: Duration,
    /// Serve HTTPS with this configuration instead of plain HTTP.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl Default for TokenServerConfig {
    fn default() -> Self {
        TokenServerConfig {
            clients: Vec::new(),
            refresh_tokens: Vec::new(),
            tokens: Tokens::default(),
            lifetime_secs: 3600,
            delay: Duration::ZERO,
            tls: None,
        }
    }
}

/// The Entra answer to a wrong client secret (AADSTS7000215).
pub const AADSTS7000215: &str = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '00000000-0000-0000-0000-000000000001'. Trace ID: 0e1b2c3d-0000-0000-0000-000000000000 Correlation ID: 5f6e7d8c-0000-0000-0000-000000000000 Timestamp: 2026-01-01 00:00:00Z","error_codes":[7000215],"timestamp":"2026-01-01 00:00:00Z","trace_id":"0e1b2c3d-0000-0000-0000-000000000000","correlation_id":"5f6e7d8c-0000-0000-0000-000000000000","error_uri":"https://login.microsoftonline.com/error?code=7000215"}"#;

struct State {
    config: TokenServerConfig,
    requests: AtomicU64,
    forced: Mutex<Option<(u16, String)>>,
}

/// A running token endpoint; stopped when dropped.
pub struct TokenServer {
    server: Background,
    state: Arc<State>,
}

impl TokenServer {
    /// Starts the endpoint on `127.0.0.1`, on a free port.
    pub fn start(config: TokenServerConfig) -> io::Result<TokenServer> {
        let state = Arc::new(State {
            config,
            requests: AtomicU64::new(0),
            forced: Mutex::new(None),
        });
        let st = Arc::clone(&state);
        let server = Background::spawn("token-server", move |tcp| {
            let st = Arc::clone(&st);
            async move {
                match st.config.tls.clone() {
                    Some(c) => {
                        if let Ok(tls) = tokio_rustls::TlsAcceptor::from(c).accept(tcp).await {
                            let _ = serve(tls, st).await;
                        }
                    }
                    None => {
                        let _ = serve(tcp, st).await;
                    }
                }
            }
        })?;
        Ok(TokenServer { server, state })
    }

    /// The token URL: `http://127.0.0.1:PORT/token`, or
    /// `https://localhost:PORT/token` when serving TLS.
    #[must_use]
    pub fn url(&self) -> String {
        match self.state.config.tls {
            Some(_) => format!("https://localhost:{}/token", self.server.addr().port()),
            None => format!("http://{}/token", self.server.addr()),
        }
    }

    /// Token requests received so far.
    #[must_use]
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Makes every following request fail with `status` and `body`
    /// (`None` goes back to issuing tokens).
    pub fn force_response(&self, response: Option<(u16, &str)>) {
        *lock(&self.state.forced) = response.map(|(s, b)| (s, b.to_owned()));
    }
}

async fn serve<S>(mut tcp: S, st: Arc<State>) -> io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::other("head too long"));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    st.requests.fetch_add(1, Ordering::Relaxed);
    if !st.config.delay.is_zero() {
        tokio::time::sleep(st.config.delay).await;
    }
    let (status, json) = answer(&st, &head, header("authorization"), &body);
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        _ => "Error",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\nCache-Control: no-store\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
    tcp.write_all(response.as_bytes()).await?;
    tcp.shutdown().await
}

fn error(status: u16, error: &str, description: &str) -> (u16, String) {
    let body = serde_json::json!({"error": error, "error_description": description});
    (status, body.to_string())
}

fn answer(st: &State, head: &str, authorization: Option<String>, body: &str) -> (u16, String) {
    if let Some((status, body)) = lock(&st.forced).clone() {
        return (status, body);
    }
    if !head.starts_with("POST ") {
        return error(405, "invalid_request", "POST only");
    }
    let form = postern_oauth::form::parse(body);
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (id, secret) = match authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
    {
        Some(b) => {
            let decoded = B64
                .decode(b.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok());
            let Some((i, s)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
                return error(401, "invalid_client", "malformed Basic credentials");
            };
            (
                Some(postern_oauth::form::decode(i)),
                Some(postern_oauth::form::decode(s)),
            )
        }
        None => (field("client_id"), field("client_secret")),
    };
    let known = st
        .config
        .clients
        .iter()
        .any(|(i, s)| Some(i) == id.as_ref() && Some(s) == secret.as_ref());
    if !known {
        return (401, AADSTS7000215.to_owned());
    }
    match field("grant_type").as_deref() {
        Some("client_credentials") => {}
        Some("refresh_token") => {
            let Some(r) = field("refresh_token") else {
                return error(400, "invalid_request", "refresh_token missing");
            };
            if !st.config.refresh_tokens.contains(&r) {
                return error(
                    400,
                    "invalid_grant",
                    "AADSTS70008: The refresh token has expired or is invalid.",
                );
            }
        }
        _ => return error(400, "unsupported_grant_type", "grant not supported"),
    }
    let token = st.config.tokens.issue();
    let body = serde_json::json!({
        "token_type": "Bearer",
        "expires_in": st.config.lifetime_secs,
        "ext_expires_in": st.config.lifetime_secs,
        "access_token": token,
    });
    (200, body.to_string())
}
