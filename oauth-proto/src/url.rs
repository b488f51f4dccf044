//! The endpoints the crate talks to, parsed and checked once: `https` (or
//! `http` on a loopback address, when allowed by name), a host, a port, a path.

use std::fmt;
use std::net::IpAddr;

/// A parsed endpoint URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    tls: bool,
    host: String,
    port: u16,
    path_and_query: String,
    url: String,
}

/// Why a URL was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UrlError {
    /// Not `https://` (or `http://`).
    Scheme(String),
    /// `http://` to a host that is not a loopback address, or without the
    /// option that allows it.
    PlainHttp(String),
    /// No host, a bad port, user info, a fragment, or a control character.
    Malformed {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::Scheme(u) => write!(f, "{u:?} is not an https:// URL"),
            UrlError::PlainHttp(u) => write!(
                f,
                "{u:?} uses plain http: token endpoints must use https (plain http is allowed \
                 only for a loopback address, with the allow-http-on-loopback option)"
            ),
            UrlError::Malformed { url, reason } => {
                write!(f, "{url:?} is not a usable URL: {reason}")
            }
        }
    }
}

impl std::error::Error for UrlError {}

impl Endpoint {
    /// Parses an `https://` URL.
    pub fn parse(url: &str) -> Result<Endpoint, UrlError> {
        Self::parse_with(url, false)
    }

    /// Parses a URL; with `allow_http_on_loopback`, `http://` is accepted when
    /// the host is `localhost` or a loopback IP address (test servers).
    pub fn parse_with(url: &str, allow_http_on_loopback: bool) -> Result<Endpoint, UrlError> {
        let bad = |reason| UrlError::Malformed {
            url: url.to_owned(),
            reason,
        };
        if url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(bad("control character or space"));
        }
        let (tls, rest) = if let Some(r) = strip_prefix_ci(url, "https://") {
            (true, r)
        } else if let Some(r) = strip_prefix_ci(url, "http://") {
            (false, r)
        } else {
            return Err(UrlError::Scheme(url.to_owned()));
        };
        if rest.contains('#') {
            return Err(bad("fragment"));
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err(bad("user info in the URL"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed IPv6 literal"))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("bad port"))?,
            None if tls => 443,
            None => 80,
        };
        if !tls {
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !(allow_http_on_loopback && loopback) {
                return Err(UrlError::PlainHttp(url.to_owned()));
            }
        }
        let path_and_query = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        Ok(Endpoint {
            tls,
            host: host.to_ascii_lowercase(),
            port,
            path_and_query,
            url: url.to_owned(),
        })
    }

    /// `true` for https.
    #[must_use]
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The host (lower case; an IPv6 literal without brackets).
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The request target: path and query.
    #[must_use]
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }

    /// The URL as given.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The `Host` header value.
    #[must_use]
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let e = Endpoint::parse("https://login.microsoftonline.com/t/oauth2/v2.0/token").unwrap();
        assert_eq!(
            (e.host(), e.port(), e.path_and_query()),
            ("login.microsoftonline.com", 443, "/t/oauth2/v2.0/token")
        );
        assert_eq!(e.host_header(), "login.microsoftonline.com");
        let e = Endpoint::parse_with("http://127.0.0.1:3000/token?x=1", true).unwrap();
        assert_eq!(
            (e.is_tls(), e.port(), e.host_header()),
            (false, 3000, "127.0.0.1:3000".to_owned())
        );
        assert!(
            Endpoint::parse_with("http://[::1]:80", true)
                .unwrap()
                .host_header()
                == "[::1]"
        );
        assert!(matches!(
            Endpoint::parse("http://127.0.0.1/token"),
            Err(UrlError::PlainHttp(_))
        ));
        assert!(matches!(
            Endpoint::parse_with("http://example.com/token", true),
            Err(UrlError::PlainHttp(_))
        ));
        assert!(matches!(
            Endpoint::parse("ftp://x/"),
            Err(UrlError::Scheme(_))
        ));
        for bad in [
            "https://",
            "https://u:p@host/",
            "https://h:99999/",
            "https://h/\r\nX: y",
            "https://h/#f",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
