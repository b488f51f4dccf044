//! The TLS policy of a connection: one type from the core to the command
//! line.

use std::fmt;
use std::str::FromStr;

/// How the SMTP connection is protected (RFC 8314, RFC 3207).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Security {
    /// TLS from the first byte; port 465 (RFC 8314 prefers it). The driver
    /// does the handshake before creating the client.
    ImplicitTls,
    /// Plaintext upgraded with STARTTLS, which must be offered and succeed;
    /// port 587. The default.
    #[default]
    StartTls,
    /// STARTTLS when offered, otherwise plaintext. Credentials are still
    /// never sent in clear unless
    /// [`crate::ClientConfig::dangerous_allow_credentials_without_tls`] is set.
    StartTlsOpportunistic,
    /// No TLS at all; port 25 (loopback tests, relays on a trusted network).
    Plaintext,
}

impl Security {
    /// Every policy, in the order of [`Security::name`]'s documentation.
    pub const ALL: [Security; 4] = [
        Security::ImplicitTls,
        Security::StartTls,
        Security::StartTlsOpportunistic,
        Security::Plaintext,
    ];

    /// The port used when none is set: 465, 587, 587, 25.
    #[must_use]
    pub fn default_port(self) -> u16 {
        match self {
            Security::ImplicitTls => 465,
            Security::StartTls | Security::StartTlsOpportunistic => 587,
            Security::Plaintext => 25,
        }
    }

    /// The name in settings and on the command line: `implicit`,
    /// `starttls`, `starttls-opportunistic`, `none`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Security::ImplicitTls => "implicit",
            Security::StartTls => "starttls",
            Security::StartTlsOpportunistic => "starttls-opportunistic",
            Security::Plaintext => "none",
        }
    }

    /// `true` when the client sends STARTTLS if the server offers it.
    #[must_use]
    pub fn wants_starttls(self) -> bool {
        matches!(self, Security::StartTls | Security::StartTlsOpportunistic)
    }
}

impl fmt::Display for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of [`Security::name`]'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownSecurity(pub String);

impl fmt::Display for UnknownSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown TLS mode {:?} (implicit, starttls, starttls-opportunistic, none)",
            self.0
        )
    }
}

impl std::error::Error for UnknownSecurity {}

impl FromStr for Security {
    type Err = UnknownSecurity;

    /// Parses [`Security::name`], in any case; `tls`/`ssl` mean implicit and
    /// `plaintext` means none.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        Security::ALL
            .into_iter()
            .find(|p| p.name() == lower)
            .or(match lower.as_str() {
                "tls" | "ssl" | "implicit-tls" => Some(Security::ImplicitTls),
                "plaintext" => Some(Security::Plaintext),
                _ => None,
            })
            .ok_or_else(|| UnknownSecurity(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_ports() {
        for p in Security::ALL {
            assert_eq!(p.name().parse::<Security>(), Ok(p));
        }
        assert_eq!("SSL".parse::<Security>(), Ok(Security::ImplicitTls));
        assert!("starttls-maybe".parse::<Security>().is_err());
        let ports: Vec<u16> = Security::ALL.iter().map(|p| p.default_port()).collect();
        assert_eq!(ports, [465, 587, 587, 25]);
    }
}
