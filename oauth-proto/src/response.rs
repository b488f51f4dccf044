//! What a token endpoint response means: a token, an OAuth error with every
//! field an admin needs, a retry with its delay, a device-flow "poll again",
//! or a protocol error with a short redacted snippet.
//!
//! Tolerated, because real servers do it: `expires_in` as a number or a digit
//! string or missing; `token_type` in any case; pretty-printed JSON; JSON
//! followed by junk (a proxy's error page appended); form-encoded success
//! bodies; an `error` member in a 200 response.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::diagnose::{self, Diagnosis};
use crate::form;
use crate::http::HttpResponse;
use postern_common::{Secret, sanitize};

/// Longest delay honoured from `Retry-After`: one hour.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A successful token response.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenResponse {
    /// The access token.
    pub access_token: Secret,
    /// `token_type` as sent (compare case-insensitively; `Bearer` expected).
    pub token_type: String,
    /// Lifetime from the response; `None` when the server did not say.
    pub expires_in: Option<Duration>,
    /// Microsoft's `refresh_in`: when to refresh, if the server says.
    pub refresh_in: Option<Duration>,
    /// A refresh token, when one came back (it replaces the stored one).
    pub refresh_token: Option<Secret>,
    /// Granted scopes.
    pub scope: Option<String>,
    /// An OpenID Connect ID token.
    pub id_token: Option<Secret>,
}

impl TokenResponse {
    /// A `Bearer` token that expires after `expires_in` (`None`: the
    /// response said nothing), with no refresh token, scope or ID token: a
    /// token from a source of the caller's own, or for tests.
    #[must_use]
    pub fn bearer(access_token: Secret, expires_in: Option<Duration>) -> Self {
        TokenResponse {
            access_token,
            token_type: "Bearer".to_owned(),
            expires_in,
            refresh_in: None,
            refresh_token: None,
            scope: None,
            id_token: None,
        }
    }
}

/// An OAuth error response (RFC 6749 §5.2) with Microsoft's extra fields.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct OAuthError {
    /// The HTTP status.
    pub status: u16,
    /// `error` (`invalid_client`, `invalid_grant`, ... or a provider's own).
    pub error: String,
    /// `error_description`.
    pub error_description: Option<String>,
    /// `error_uri`.
    pub error_uri: Option<String>,
    /// Microsoft `error_codes` (the AADSTS numbers).
    pub error_codes: Vec<u64>,
    /// Microsoft `suberror` (e.g. `bad_token`, `consent_required`).
    pub suberror: Option<String>,
    /// Microsoft `trace_id`, for support tickets.
    pub trace_id: Option<String>,
    /// Microsoft `correlation_id`, for support tickets.
    pub correlation_id: Option<String>,
    /// Microsoft `timestamp`.
    pub timestamp: Option<String>,
    /// A claims challenge to pass to the next interactive request.
    pub claims: Option<String>,
}

impl OAuthError {
    /// An error response with HTTP `status` and the `error` code; the other
    /// members empty.
    #[must_use]
    pub fn new(status: u16, error: impl Into<String>) -> Self {
        OAuthError {
            status,
            error: error.into(),
            ..OAuthError::default()
        }
    }

    /// `true` when the same request may succeed later without a change
    /// (`temporarily_unavailable`, `server_error`, `slow_down`,
    /// `authorization_pending`).
    #[must_use]
    pub fn retryable(&self) -> bool {
        matches!(
            self.error.as_str(),
            "temporarily_unavailable" | "server_error" | "slow_down" | "authorization_pending"
        )
    }

    /// `true` when only a new interactive authorization can cure it (refresh
    /// token dead, consent or MFA needed, device code expired).
    #[must_use]
    pub fn needs_user(&self) -> bool {
        matches!(
            self.error.as_str(),
            "invalid_grant"
                | "interaction_required"
                | "consent_required"
                | "login_required"
                | "expired_token"
        ) && !matches!(
            self.diagnosis().map(|d| d.id),
            Some("client.clock_skew" | "client.concurrency.double_redeem")
        )
    }

    /// The admin diagnosis, when the error is a known one, with
    /// [`OAuthError::link`] filled in.
    #[must_use]
    pub fn diagnosis(&self) -> Option<Diagnosis> {
        let d = diagnose::diagnose(self)?;
        Some(match self.link() {
            Some(link) => d.with_link(link),
            None => d,
        })
    }

    /// Where the provider explains this error: the `error_uri` it sent, or
    /// else Microsoft's error page for the first AADSTS code.
    #[must_use]
    pub fn link(&self) -> Option<String> {
        if let Some(uri) = self.error_uri.as_deref().filter(|u| !u.trim().is_empty()) {
            return Some(uri.trim().to_owned());
        }
        self.error_codes
            .first()
            .map(|code| format!("https://login.microsoftonline.com/error?code={code}"))
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every field is the endpoint's text: shown escaped and bounded.
        write!(
            f,
            "token endpoint error {} (HTTP {})",
            sanitize(&self.error, 100),
            self.status
        )?;
        if let Some(d) = &self.error_description {
            // Microsoft puts trace lines in the description: keep the first line.
            write!(
                f,
                ": {}",
                sanitize(d.lines().next().unwrap_or("").trim(), 500)
            )?;
        }
        if let Some(t) = &self.trace_id {
            write!(f, " [trace id {}", sanitize(t, 100))?;
            if let Some(c) = &self.correlation_id {
                write!(f, ", correlation id {}", sanitize(c, 100))?;
            }
            f.write_str("]")?;
        }
        if let Some(d) = self.diagnosis() {
            write!(f, " ({}: {})", d.id, d.fix)?;
        }
        if let Some(link) = self.link() {
            write!(f, " more: {}", sanitize(&link, 300))?;
        }
        Ok(())
    }
}

impl std::error::Error for OAuthError {}

/// A response that is neither a token nor an OAuth error.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProtocolError {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type`, when sent.
    pub content_type: Option<String>,
    /// What is wrong.
    pub reason: String,
    /// The first bytes of the body, with anything token-like redacted.
    pub snippet: String,
    /// The diagnosis, when the shape is a known mistake.
    pub diagnosis: Option<Diagnosis>,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unexpected token endpoint response (HTTP {}",
            self.status
        )?;
        if let Some(ct) = &self.content_type {
            write!(f, ", {}", sanitize(ct, 100))?;
        }
        write!(
            f,
            "): {}; body starts \"{}\"",
            self.reason,
            sanitize(&self.snippet, 200)
        )?;
        if let Some(d) = &self.diagnosis {
            write!(f, " ({}: {})", d.id, d.fix)?;
        }
        Ok(())
    }
}

impl std::error::Error for ProtocolError {}

/// A device authorization response (RFC 8628 §3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceAuthorization {
    /// The device code, for polling.
    pub device_code: Secret,
    /// The code the user types.
    pub user_code: String,
    /// Where the user goes (`verification_uri`, or Google's `verification_url`).
    pub verification_uri: String,
    /// The URI with the code filled in, when sent.
    pub verification_uri_complete: Option<String>,
    /// How long the codes are valid.
    pub expires_in: Duration,
    /// The polling interval (RFC default 5 s when absent).
    pub interval: Duration,
    /// The server's message for the user, when sent (Microsoft).
    pub message: Option<String>,
}

/// The meaning of a token endpoint response.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// A token.
    Token(TokenResponse),
    /// An OAuth error: do not retry the same request.
    OAuthError(OAuthError),
    /// Try again later (HTTP 408, 429, 5xx): after `after` when the server
    /// said (capped at [`MAX_RETRY_AFTER`]), else with backoff. `error` holds
    /// the OAuth error body when there was one.
    Retry {
        /// The HTTP status.
        status: u16,
        /// The server's `Retry-After`, capped.
        after: Option<Duration>,
        /// The error body, when it was an OAuth error.
        error: Option<OAuthError>,
    },
    /// Device flow: the user has not finished yet. Poll again after the
    /// interval, 5 s longer when `slow_down` (RFC 8628 §3.5).
    PollAgain {
        /// `slow_down` rather than `authorization_pending`.
        slow_down: bool,
    },
    /// Neither a token nor an OAuth error.
    ProtocolError(ProtocolError),
}

/// Classifies a token endpoint response. `now_unix` is used for a
/// `Retry-After` HTTP-date when the response has no `Date` header.
#[must_use]
pub fn classify(resp: &HttpResponse, now_unix: Option<u64>) -> Outcome {
    let status = resp.status;
    let doc = parse_body(resp);
    let error = doc.as_ref().and_then(|d| oauth_error(d, status));
    if status == 408 || status == 429 || (500..600).contains(&status) {
        let after = retry_after(resp, now_unix);
        return Outcome::Retry {
            status,
            after,
            error,
        };
    }
    if let Some(e) = error {
        return match e.error.as_str() {
            "authorization_pending" => Outcome::PollAgain { slow_down: false },
            "slow_down" => Outcome::PollAgain { slow_down: true },
            _ => Outcome::OAuthError(e),
        };
    }
    let reason = match (&doc, (200..300).contains(&status)) {
        (Some(d), true) => match token(d) {
            Ok(t) => return Outcome::Token(t),
            Err(reason) => reason,
        },
        (Some(_), false) => format!("HTTP {status} without an OAuth error"),
        (None, _) => "the body is not JSON".to_owned(),
    };
    Outcome::ProtocolError(protocol_error(resp, reason))
}

/// Classifies a device authorization response: the authorization, or the
/// outcome that explains why there is none (an OAuth error, a retry...).
pub fn classify_device_authorization(
    resp: &HttpResponse,
) -> Result<DeviceAuthorization, Box<Outcome>> {
    let ok = (200..300).contains(&resp.status);
    if let Some(auth) = parse_body(resp).filter(|_| ok).as_ref().and_then(device) {
        return Ok(auth);
    }
    Err(Box::new(match classify(resp, None) {
        Outcome::Token(_) => Outcome::ProtocolError(protocol_error(
            resp,
            "not a device authorization response".into(),
        )),
        other => other,
    }))
}

/// The JSON object of the body: the first complete JSON value (junk after it
/// is tolerated), or a form-encoded body turned into an object.
fn parse_body(resp: &HttpResponse) -> Option<Map<String, Value>> {
    let body = resp.body.trim_ascii_start();
    if body.first() == Some(&b'{') {
        let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
        return match stream.next() {
            Some(Ok(Value::Object(m))) => Some(m),
            _ => None,
        };
    }
    let form_type = resp.header("content-type").is_some_and(|ct| {
        ct.to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    if form_type {
        let text = std::str::from_utf8(body).ok()?;
        let map: Map<String, Value> = form::parse(text.trim())
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        return (!map.is_empty()).then_some(map);
    }
    None
}

fn string(d: &Map<String, Value>, key: &str) -> Option<String> {
    match d.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Seconds as a number or a digit string (Microsoft v1 sends strings).
fn seconds(d: &Map<String, Value>, key: &str) -> Option<Duration> {
    let n = match d.get(key)? {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    Some(Duration::from_secs(n))
}

fn oauth_error(d: &Map<String, Value>, status: u16) -> Option<OAuthError> {
    let error = string(d, "error").filter(|e| !e.is_empty())?;
    let error_codes = match d.get("error_codes") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).collect(),
        _ => Vec::new(),
    };
    Some(OAuthError {
        status,
        error,
        error_description: string(d, "error_description"),
        error_uri: string(d, "error_uri"),
        error_codes,
        suberror: string(d, "suberror"),
        trace_id: string(d, "trace_id"),
        correlation_id: string(d, "correlation_id"),
        timestamp: string(d, "timestamp"),
        claims: string(d, "claims"),
    })
}

fn token(d: &Map<String, Value>) -> Result<TokenResponse, String> {
    let access_token = match d.get("access_token") {
        Some(Value::String(s)) if !s.is_empty() => Secret::new(s.clone()),
        Some(_) => return Err("access_token is empty or not a string".into()),
        None => return Err("no access_token in a success response".into()),
    };
    // Kept as sent: RFC 6749's own example says "example". SMTP sends the
    // token as a bearer token whatever the type says.
    let token_type = string(d, "token_type").unwrap_or_else(|| "Bearer".to_owned());
    Ok(TokenResponse {
        access_token,
        token_type,
        expires_in: seconds(d, "expires_in"),
        refresh_in: seconds(d, "refresh_in"),
        refresh_token: string(d, "refresh_token")
            .filter(|s| !s.is_empty())
            .map(Secret::new),
        scope: string(d, "scope"),
        id_token: string(d, "id_token").map(Secret::new),
    })
}

fn device(d: &Map<String, Value>) -> Option<DeviceAuthorization> {
    Some(DeviceAuthorization {
        device_code: Secret::new(string(d, "device_code")?),
        user_code: string(d, "user_code")?,
        verification_uri: string(d, "verification_uri")
            .or_else(|| string(d, "verification_url"))?,
        verification_uri_complete: string(d, "verification_uri_complete"),
        expires_in: seconds(d, "expires_in").unwrap_or(Duration::from_secs(900)),
        interval: seconds(d, "interval")
            .filter(|i| !i.is_zero())
            .unwrap_or(Duration::from_secs(5)),
        message: string(d, "message"),
    })
}

fn protocol_error(resp: &HttpResponse, reason: String) -> ProtocolError {
    let content_type = resp.header("content-type").map(str::to_owned);
    let html = content_type
        .as_deref()
        .is_some_and(|c| c.to_ascii_lowercase().contains("html"))
        || resp.body.trim_ascii_start().first() == Some(&b'<');
    let diagnosis =
        (html || resp.status == 404 || resp.status == 405).then_some(diagnose::TOKEN_URL_WRONG);
    ProtocolError {
        status: resp.status,
        content_type,
        reason,
        snippet: snippet(&resp.body),
        diagnosis,
    }
}

/// Field names whose values are secrets wherever they appear.
const SECRET_FIELDS: &[&str] = &[
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "client_assertion",
    "assertion",
    "device_code",
    "code",
    "password",
];

/// Replaces the value of every secret field, in JSON (`"access_token": "..."`,
/// even unterminated) or form encoding (`access_token=...`), by `[redacted]`.
fn mask_secret_fields(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        // JSON: "name" : "value"
        if rest.starts_with('"')
            && let Some(end) = rest[1..].find('"')
            && SECRET_FIELDS.contains(&&rest[1..1 + end])
        {
            let after_key = &rest[end + 2..];
            let after_colon = after_key
                .trim_start()
                .strip_prefix(':')
                .map(str::trim_start);
            if let Some(value) = after_colon.and_then(|v| v.strip_prefix('"')) {
                let value_at = text.len() - value.len();
                out.push_str(&text[i..value_at]);
                out.push_str("[redacted]");
                // Skip to the closing quote (honouring escapes), or the end.
                let mut j = value_at;
                let bytes = text.as_bytes();
                while j < bytes.len() && bytes[j] != b'"' {
                    j += if bytes[j] == b'\\' { 2 } else { 1 };
                }
                i = j.min(text.len());
                continue;
            }
        }
        // Form: name=value at a word boundary (start, `&`, `?`, ...).
        let at_field_start = i == 0 || {
            let prev = text.as_bytes()[i - 1];
            !(prev.is_ascii_alphanumeric() || prev == b'_')
        };
        if at_field_start
            && let Some(name) = SECRET_FIELDS
                .iter()
                .find(|n| rest.starts_with(**n) && rest[n.len()..].starts_with('='))
        {
            out.push_str(&rest[..=name.len()]);
            out.push_str("[redacted]");
            let end = rest.find(['&', ' ', '\r', '\n']).unwrap_or(rest.len());
            i += end.max(name.len() + 1);
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// The first 120 characters of a body, with secrets replaced: the values of
/// secret fields (`access_token`, `refresh_token`, ...) in JSON or form
/// encoding, and token-like runs (24 or more characters of the base64/JWT
/// alphabet, or 16 or more with a digit).
#[must_use]
pub fn snippet(body: &[u8]) -> String {
    let text = mask_secret_fields(&String::from_utf8_lossy(&body[..body.len().min(480)]));
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let digits = run.bytes().any(|b| b.is_ascii_digit());
        if run.len() >= 24 || (run.len() >= 16 && digits) {
            out.push_str("[redacted]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '/' | '=') {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(if c.is_control() { ' ' } else { c });
        }
        if out.chars().count() >= 120 {
            break;
        }
    }
    flush(&mut run, &mut out);
    out.chars().take(120).collect()
}

/// `Retry-After` as seconds or an HTTP-date (relative to the response's
/// `Date`, else `now_unix`), capped at [`MAX_RETRY_AFTER`].
fn retry_after(resp: &HttpResponse, now_unix: Option<u64>) -> Option<Duration> {
    let v = resp.header("retry-after")?.trim();
    let secs = if let Ok(s) = v.parse::<u64>() {
        s
    } else {
        let at = http_date(v)?;
        let now = resp.header("date").and_then(http_date).or(now_unix)?;
        at.saturating_sub(now)
    };
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to Unix seconds.
#[must_use]
pub fn http_date(s: &str) -> Option<u64> {
    let mut it = s.split_whitespace();
    let _weekday = it.next()?;
    let day: u64 = it.next()?.parse().ok()?;
    let month_name = it.next()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == month_name)? as u64
        + 1;
    let year: u64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if it.next()? != "GMT"
        || !(1..=31).contains(&day)
        || h > 23
        || m > 59
        || sec > 60
        || year < 1970
    {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm), for years from 1970.
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_snippets() {
        assert_eq!(
            http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(http_date("Sun, 06 Nov 1994 08:49:37 PST"), None);
        assert_eq!(http_date("garbage"), None);
        let s = snippet(b"<html>token eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.abc\r\n</html>");
        assert!(s.contains("[redacted]") && !s.contains("eyJ0eXAi"), "{s}");
    }
}
