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
    /// Public clients (PKCE or device flow, no secret).
    pub public_clients: Vec<String>,
    /// Clients that authenticate with a signed assertion
    /// (`private_key_jwt`). The shape is checked (RS256, an `x5t` header,
    /// `iss` = `sub` = client id, `aud` = this token URL, unexpired); the
    /// signature is not.
    pub assertion_clients: Vec<String>,
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
            public_clients: Vec::new(),
            assertion_clients: Vec::new(),
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
    retry_after: Mutex<Option<u64>>,
    /// Authorization codes issued: code → (PKCE challenge, redirect URI).
    codes: Mutex<Vec<(String, String, String)>>,
    /// Refresh tokens issued by the code and device flows.
    issued_refresh: Mutex<Vec<String>>,
    /// Device codes and how often each was polled.
    device_polls: Mutex<Vec<(String, u32)>>,
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
            retry_after: Mutex::new(None),
            codes: Mutex::new(Vec::new()),
            issued_refresh: Mutex::new(Vec::new()),
            device_polls: Mutex::new(Vec::new()),
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

    /// A new connection over an in-memory pipe instead of TCP (what
    /// [`crate::Virtual`] connects to); the returned end is the client's.
    #[must_use]
    pub fn connect_in_memory(&self) -> tokio::io::DuplexStream {
        self.server.attach()
    }

    pub(crate) fn dialer(&self) -> crate::Dialer {
        self.server.dialer()
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

    /// The listening port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// Token requests received so far.
    #[must_use]
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// The authorization endpoint (`/authorize`): it signs the user in at
    /// once and redirects with a code (no page, no password).
    #[must_use]
    pub fn authorize_url(&self) -> String {
        self.url().replace("/token", "/authorize")
    }

    /// The device authorization endpoint (`/devicecode`). The second token
    /// poll for a device code succeeds.
    #[must_use]
    pub fn device_url(&self) -> String {
        self.url().replace("/token", "/devicecode")
    }

    /// Makes every following request fail with `status` and `body`
    /// (`None` goes back to issuing tokens).
    pub fn force_response(&self, response: Option<(u16, &str)>) {
        *lock(&self.state.forced) = response.map(|(s, b)| (s, b.to_owned()));
    }

    /// Makes every following request a `429` with `Retry-After: SECS`
    /// (`None` goes back to issuing tokens).
    pub fn force_busy(&self, retry_after_secs: Option<u64>) {
        *lock(&self.state.retry_after) = retry_after_secs;
        self.force_response(retry_after_secs.map(|_| (429, "{\"error\":\"too_many_requests\"}")));
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
    if status == 302 {
        let response = format!(
            "HTTP/1.1 302 Found\r\nLocation: {json}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        tcp.write_all(response.as_bytes()).await?;
        return tcp.shutdown().await;
    }
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        429 => "Too Many Requests",
        _ => "Error",
    };
    let retry = match *lock(&st.retry_after) {
        Some(secs) if status == 429 => format!("Retry-After: {secs}\r\n"),
        _ => String::new(),
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\nCache-Control: no-store\r\n{retry}Content-Length: {}\r\nConnection: close\r\n\r\n{json}",
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
    let target = head.split(' ').nth(1).unwrap_or("");
    if head.starts_with("GET ") && target.starts_with("/authorize?") {
        return authorize(st, target);
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
        .any(|(i, s)| Some(i) == id.as_ref() && Some(s) == secret.as_ref())
        || (secret.is_none()
            && field("client_assertion").is_none()
            && id
                .as_ref()
                .is_some_and(|i| st.config.public_clients.contains(i)))
        || assertion_ok(
            st,
            id.as_deref(),
            field("client_assertion_type"),
            field("client_assertion"),
        );
    if !known {
        return (401, AADSTS7000215.to_owned());
    }
    if target == "/devicecode" {
        let n = lock(&st.device_polls).len() + 1;
        let code = format!("dc-{n}");
        lock(&st.device_polls).push((code.clone(), 0));
        let body = serde_json::json!({
            "device_code": code,
            "user_code": format!("USER-{n:04}"),
            "verification_uri": "https://login.example/device",
            "expires_in": 120,
            "interval": 1,
        });
        return (200, body.to_string());
    }
    let mut refresh = None;
    match field("grant_type").as_deref() {
        Some("client_credentials") => {}
        Some("authorization_code") => {
            let code = field("code").unwrap_or_default();
            let verifier = field("code_verifier").unwrap_or_default();
            let mut codes = lock(&st.codes);
            let Some(i) = codes.iter().position(|(c, _, _)| *c == code) else {
                return error(400, "invalid_grant", "unknown or used code");
            };
            let (_, challenge, redirect) = codes.remove(i);
            if postern_oauth::pkce::challenge_s256(&verifier) != challenge {
                return error(400, "invalid_grant", "PKCE verification failed");
            }
            if field("redirect_uri").as_deref() != Some(redirect.as_str()) {
                return error(400, "invalid_grant", "redirect_uri differs");
            }
            refresh = Some(format!("rt-{}", st.config.tokens.issued() + 1));
        }
        Some("urn:ietf:params:oauth:grant-type:device_code") => {
            let code = field("device_code").unwrap_or_default();
            let mut polls = lock(&st.device_polls);
            let Some(entry) = polls.iter_mut().find(|(c, _)| *c == code) else {
                return error(400, "invalid_grant", "unknown device code");
            };
            entry.1 += 1;
            if entry.1 < 2 {
                return error(400, "authorization_pending", "the user has not finished");
            }
            refresh = Some(format!("rt-{}", st.config.tokens.issued() + 1));
        }
        Some("refresh_token") => {
            let Some(r) = field("refresh_token") else {
                return error(400, "invalid_request", "refresh_token missing");
            };
            if !st.config.refresh_tokens.contains(&r) && !lock(&st.issued_refresh).contains(&r) {
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
    let mut body = serde_json::json!({
        "token_type": "Bearer",
        "expires_in": st.config.lifetime_secs,
        "ext_expires_in": st.config.lifetime_secs,
        "access_token": token,
    });
    if let Some(r) = refresh {
        lock(&st.issued_refresh).push(r.clone());
        body["refresh_token"] = serde_json::json!(r);
    }
    (200, body.to_string())
}

fn assertion_ok(st: &State, id: Option<&str>, kind: Option<String>, jwt: Option<String>) -> bool {
    let (Some(id), Some(jwt)) = (id, jwt) else {
        return false;
    };
    if kind.as_deref() != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        || !st.config.assertion_clients.iter().any(|c| c == id)
    {
        return false;
    }
    let decode = |part: &str| -> Option<serde_json::Value> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let (Some(header), Some(claims)) = (decode(h), decode(c)) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    header["alg"] == "RS256"
        && header["x5t"].is_string()
        && claims["iss"] == id
        && claims["sub"] == id
        && claims["aud"]
            .as_str()
            .is_some_and(|a| a.ends_with("/token"))
        && claims["exp"].as_u64().is_some_and(|e| e > now)
        && sig.len() > 300
}

/// `GET /authorize?...`: redirects at once with a code bound to the PKCE
/// challenge.
fn authorize(st: &State, target: &str) -> (u16, String) {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let form = postern_oauth::form::parse(query);
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (Some(redirect), Some(challenge)) = (field("redirect_uri"), field("code_challenge")) else {
        return error(
            400,
            "invalid_request",
            "redirect_uri and code_challenge are required",
        );
    };
    if field("code_challenge_method").as_deref() != Some("S256") {
        return error(400, "invalid_request", "S256 required");
    }
    let code = format!("code-{}", lock(&st.codes).len() + 1);
    lock(&st.codes).push((code.clone(), challenge, redirect.clone()));
    let state = field("state").unwrap_or_default();
    let location = format!(
        "{redirect}?code={}&state={}",
        postern_oauth::form::encode(&code),
        postern_oauth::form::encode(&state)
    );
    (302, location)
}
