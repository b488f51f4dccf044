//! An HTTP proxy for token requests, as corporate networks require to reach
//! `login.microsoftonline.com`: the request goes through a `CONNECT`
//! tunnel, and TLS runs end to end inside it (the proxy sees only the host
//! name). `HTTPS_PROXY` and `NO_PROXY` follow curl's conventions.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use postern_common::{Secret, sanitize};

/// The longest `CONNECT` reply header read: 8 KiB.
pub const MAX_CONNECT_REPLY: usize = 8 * 1024;

/// An HTTP proxy (`http://[user:password@]host[:port]`, port 8080 by
/// default) and the hosts it is not used for.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    host: String,
    port: u16,
    authorization: Option<Secret>,
    no_proxy: Vec<String>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "[redacted]"),
            )
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// Why a proxy setting or a proxy's answer is unusable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyError(pub String);

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProxyError {}

impl Proxy {
    /// Parses `http://[user:password@]host[:port][/]` (a bare `host:port`
    /// is read as http). Credentials are percent-decoded and kept as a
    /// secret.
    pub fn parse(url: &str) -> Result<Proxy, ProxyError> {
        let bad = |why: &str| ProxyError(format!("proxy {:?}: {why}", sanitize(url, 100)));
        let rest = url.trim();
        let rest = match rest.split_once("://") {
            Some(("http" | "HTTP", r)) => r,
            Some(_) => return Err(bad("only http:// proxies are supported")),
            None => rest,
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))?,
            ),
            _ => (hostport, 8080),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['/', ' ', '?', '#']) {
            return Err(bad("no host"));
        }
        let authorization = userinfo.map(|u| {
            let decoded = percent_decode(u);
            Secret::new(format!("Basic {}", STANDARD.encode(decoded)))
        });
        Ok(Proxy {
            host: host.to_owned(),
            port,
            authorization,
            no_proxy: Vec::new(),
        })
    }

    /// The proxy from `HTTPS_PROXY`-style and `NO_PROXY`-style values (the
    /// caller reads the environment): `None` when no proxy is set.
    pub fn from_env_values(
        https_proxy: Option<&str>,
        no_proxy: Option<&str>,
    ) -> Result<Option<Proxy>, ProxyError> {
        match https_proxy.map(str::trim).filter(|p| !p.is_empty()) {
            None => Ok(None),
            Some(p) => Ok(Some(Proxy::parse(p)?.with_no_proxy(no_proxy.unwrap_or("")))),
        }
    }

    /// Hosts reached directly: a comma-separated list of names (a name also
    /// covers its subdomains; a leading `.` is allowed), IP addresses, or
    /// `*` for all.
    #[must_use]
    pub fn with_no_proxy(mut self, list: &str) -> Proxy {
        self.no_proxy = list
            .split(',')
            .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        self
    }

    /// `true` when requests to `host` go through the proxy.
    #[must_use]
    pub fn applies_to(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        !self
            .no_proxy
            .iter()
            .any(|e| e == "*" || host == *e || host.ends_with(&format!(".{e}")))
    }

    /// The proxy's host.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `CONNECT` request that opens a tunnel to `host:port`.
    #[must_use]
    pub fn connect_request(&self, host: &str, port: u16) -> Vec<u8> {
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut out = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some(a) = &self.authorization {
            out.push_str("Proxy-Authorization: ");
            out.push_str(a.expose());
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// `%XX` escapes decoded (userinfo keeps `+` as is).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|c| hex(*c)),
                b.get(i + 2).and_then(|c| hex(*c)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads the proxy's answer to `CONNECT` from the bytes received so far:
/// `Ok(None)` until the header is complete, `Ok(Some(n))` for a `2xx` whose
/// header is `n` bytes long (the tunnel starts after it), an error for any
/// other status or a header over [`MAX_CONNECT_REPLY`].
pub fn parse_connect_reply(received: &[u8]) -> Result<Option<usize>, ProxyError> {
    let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
        if received.len() > MAX_CONNECT_REPLY {
            return Err(ProxyError("the proxy's answer is too long".to_owned()));
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&received[..end]);
    let status_line = head.lines().next().unwrap_or("");
    let mut parts = status_line.split_whitespace();
    let version_ok = parts.next().is_some_and(|v| v.starts_with("HTTP/1."));
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(200..=299) if version_ok => Ok(Some(end + 4)),
        _ => Err(ProxyError(format!(
            "the proxy refused the tunnel: {}",
            sanitize(status_line, 200)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_and_no_proxy() {
        let p = Proxy::parse("http://alice:s%3Acret@proxy.corp:3128/")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.host(), p.port()), ("proxy.corp", 3128));
        let req = String::from_utf8(p.connect_request("login.microsoftonline.com", 443))
            .unwrap_or_default();
        assert_eq!(
            req,
            "CONNECT login.microsoftonline.com:443 HTTP/1.1\r\nHost: login.microsoftonline.com:443\r\nProxy-Authorization: Basic YWxpY2U6czpjcmV0\r\n\r\n"
        );
        assert!(!format!("{p:?}").contains("YWxp"), "credentials redacted");
        let p = Proxy::parse("proxy:8080")
            .unwrap_or_else(|e| panic!("{e}"))
            .with_no_proxy("localhost, .corp.example,10.0.0.1");
        assert!(p.applies_to("login.microsoftonline.com"));
        assert!(!p.applies_to("localhost"));
        assert!(!p.applies_to("idp.corp.example"));
        assert!(!p.applies_to("10.0.0.1"));
        assert!(
            !Proxy::parse("p:1")
                .unwrap_or_else(|e| panic!("{e}"))
                .with_no_proxy("*")
                .applies_to("x")
        );
        assert!(Proxy::parse("socks5://p:1").is_err());
        assert_eq!(Proxy::from_env_values(Some(" "), None), Ok(None));
    }

    #[test]
    fn connect_replies() {
        assert_eq!(
            parse_connect_reply(b"HTTP/1.1 200 Connection established\r\n"),
            Ok(None)
        );
        assert_eq!(
            parse_connect_reply(b"HTTP/1.0 200 Connection established\r\nProxy-agent: x\r\n\r\n"),
            Ok(Some(55))
        );
        let e = parse_connect_reply(b"HTTP/1.1 407 Proxy Authentication Required\x1b[2J\r\n\r\n")
            .unwrap_err();
        assert!(e.0.contains("407") && !e.0.contains('\x1b'), "{e}");
        assert!(parse_connect_reply(&[b'a'; MAX_CONNECT_REPLY + 1]).is_err());
    }
}
