//! Provider presets: endpoints, scopes and client authentication defaults for
//! Microsoft Entra, Google, and any other OAuth2 server. Every value can be
//! overridden by the caller.

use crate::url::{Endpoint, UrlError};

/// A Microsoft national cloud.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MicrosoftCloud {
    /// Worldwide (`login.microsoftonline.com`).
    #[default]
    Global,
    /// US Government (GCC High, DoD): `login.microsoftonline.us`.
    UsGovernment,
    /// China (21Vianet): `login.chinacloudapi.cn`.
    China,
}

impl MicrosoftCloud {
    /// The authority host.
    #[must_use]
    pub fn authority_host(self) -> &'static str {
        match self {
            MicrosoftCloud::Global => "login.microsoftonline.com",
            MicrosoftCloud::UsGovernment => "login.microsoftonline.us",
            MicrosoftCloud::China => "login.chinacloudapi.cn",
        }
    }

    /// The Exchange Online resource for app-only (`.default`) tokens.
    #[must_use]
    pub fn app_only_scope(self) -> &'static str {
        match self {
            MicrosoftCloud::Global => "https://outlook.office365.com/.default",
            MicrosoftCloud::UsGovernment => "https://outlook.office365.us/.default",
            MicrosoftCloud::China => "https://partner.outlook.cn/.default",
        }
    }

    /// The delegated SMTP scope (with `offline_access` for a refresh token).
    #[must_use]
    pub fn delegated_scope(self) -> &'static str {
        match self {
            MicrosoftCloud::Global => "https://outlook.office.com/SMTP.Send offline_access",
            MicrosoftCloud::UsGovernment => "https://outlook.office365.us/SMTP.Send offline_access",
            MicrosoftCloud::China => "https://partner.outlook.cn/SMTP.Send offline_access",
        }
    }

    /// The name [`MicrosoftCloud::from_name`] reads: `global`, `usgov`, `china`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            MicrosoftCloud::Global => "global",
            MicrosoftCloud::UsGovernment => "usgov",
            MicrosoftCloud::China => "china",
        }
    }

    /// Parses `global`, `us`/`usgov`/`gcchigh`, `china`/`cn`.
    #[must_use]
    pub fn from_name(name: &str) -> Option<MicrosoftCloud> {
        match name.to_ascii_lowercase().as_str() {
            "global" | "public" | "worldwide" => Some(MicrosoftCloud::Global),
            "us" | "usgov" | "us-government" | "gcchigh" | "dod" => {
                Some(MicrosoftCloud::UsGovernment)
            }
            "china" | "cn" | "21vianet" => Some(MicrosoftCloud::China),
            _ => None,
        }
    }
}

/// An OAuth2 provider.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Provider {
    /// Microsoft Entra ID (Exchange Online).
    Microsoft {
        /// Tenant id (GUID) or domain, or `organizations` / `common` for
        /// delegated sign-in.
        tenant: String,
        /// The cloud.
        cloud: MicrosoftCloud,
    },
    /// Google (Gmail, Workspace).
    Google,
    /// Any OAuth2 server.
    Generic {
        /// The token endpoint.
        token_url: String,
        /// The authorization endpoint, for the code flow.
        authorize_url: Option<String>,
        /// The device authorization endpoint.
        device_url: Option<String>,
        /// The scope to request.
        scope: Option<String>,
    },
}

/// The endpoints of a provider, as URLs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Endpoints {
    /// Token endpoint.
    pub token: String,
    /// Authorization endpoint, when the provider has one.
    pub authorize: Option<String>,
    /// Device authorization endpoint, when the provider allows the device
    /// flow for mail.
    pub device: Option<String>,
}

impl Provider {
    /// The provider a token URL belongs to: Microsoft (with its tenant and
    /// cloud) for `https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token`
    /// and the other clouds' hosts, Google for its token URL, `None` for any
    /// other (a generic server).
    #[must_use]
    pub fn recognize(token_url: &str) -> Option<Provider> {
        let rest = token_url.trim().strip_prefix("https://")?;
        let (host, path) = rest.split_once('/')?;
        let host = host.to_ascii_lowercase();
        if host == "oauth2.googleapis.com" || host == "accounts.google.com" {
            return Some(Provider::Google);
        }
        let cloud = [
            MicrosoftCloud::Global,
            MicrosoftCloud::UsGovernment,
            MicrosoftCloud::China,
        ]
        .into_iter()
        .find(|c| c.authority_host() == host)?;
        let (tenant, rest) = path.split_once('/')?;
        let version_ok = rest.trim_end_matches('/') == "oauth2/v2.0/token";
        (version_ok && !tenant.is_empty()).then(|| Provider::Microsoft {
            tenant: tenant.to_owned(),
            cloud,
        })
    }

    /// The provider's SMTP submission server: host, port, and whether TLS
    /// is implicit from the first byte (else STARTTLS). Exchange Online
    /// takes submissions on 587 with STARTTLS (each cloud its own host);
    /// Gmail on 465 with implicit TLS. `None` for a generic server.
    #[must_use]
    pub fn submission_server(&self) -> Option<(&'static str, u16, bool)> {
        match self {
            Provider::Microsoft { cloud, .. } => Some(match cloud {
                MicrosoftCloud::Global => ("smtp.office365.com", 587, false),
                MicrosoftCloud::UsGovernment => ("smtp.office365.us", 587, false),
                MicrosoftCloud::China => ("smtp.partner.outlook.cn", 587, false),
            }),
            Provider::Google => Some(("smtp.gmail.com", 465, true)),
            Provider::Generic { .. } => None,
        }
    }

    /// The endpoints.
    #[must_use]
    pub fn endpoints(&self) -> Endpoints {
        match self {
            Provider::Microsoft { tenant, cloud } => {
                let base = format!("https://{}/{}/oauth2/v2.0", cloud.authority_host(), tenant);
                Endpoints {
                    token: format!("{base}/token"),
                    authorize: Some(format!("{base}/authorize")),
                    device: Some(format!("{base}/devicecode")),
                }
            }
            Provider::Google => Endpoints {
                token: "https://oauth2.googleapis.com/token".to_owned(),
                authorize: Some("https://accounts.google.com/o/oauth2/v2/auth".to_owned()),
                // Google's device flow does not allow Gmail scopes.
                device: None,
            },
            Provider::Generic {
                token_url,
                authorize_url,
                device_url,
                ..
            } => Endpoints {
                token: token_url.clone(),
                authorize: authorize_url.clone(),
                device: device_url.clone(),
            },
        }
    }

    /// The token endpoint, parsed (https only, unless `allow_http_on_loopback`).
    pub fn token_endpoint(&self, allow_http_on_loopback: bool) -> Result<Endpoint, UrlError> {
        Endpoint::parse_with(&self.endpoints().token, allow_http_on_loopback)
    }

    /// The default scope: app-only (client credentials) or delegated (a user's
    /// mailbox, with a refresh token).
    #[must_use]
    pub fn default_scope(&self, app_only: bool) -> Option<String> {
        match self {
            Provider::Microsoft { cloud, .. } => Some(
                if app_only {
                    cloud.app_only_scope()
                } else {
                    cloud.delegated_scope()
                }
                .to_owned(),
            ),
            Provider::Google => Some("https://mail.google.com/".to_owned()),
            Provider::Generic { scope, .. } => scope.clone(),
        }
    }

    /// Extra authorization URL parameters the provider needs for a refresh
    /// token (Google: `access_type=offline`, `prompt=consent`).
    #[must_use]
    pub fn offline_parameters(&self) -> Vec<(&'static str, &'static str)> {
        match self {
            Provider::Google => vec![("access_type", "offline"), ("prompt", "consent")],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_urls_are_recognized() {
        assert_eq!(
            Provider::recognize("https://login.microsoftonline.com/contoso/oauth2/v2.0/token"),
            Some(Provider::Microsoft {
                tenant: "contoso".into(),
                cloud: MicrosoftCloud::Global
            })
        );
        assert_eq!(
            Provider::recognize("https://login.microsoftonline.us/t/oauth2/v2.0/token"),
            Some(Provider::Microsoft {
                tenant: "t".into(),
                cloud: MicrosoftCloud::UsGovernment
            })
        );
        assert_eq!(
            Provider::recognize("https://oauth2.googleapis.com/token"),
            Some(Provider::Google)
        );
        assert_eq!(Provider::recognize("https://idp.example.com/token"), None);
        assert_eq!(
            Provider::recognize("https://login.microsoftonline.com/t/oauth2/token"),
            None,
            "the v1 endpoint is not the one postern builds"
        );
    }

    #[test]
    fn presets() {
        let ms = Provider::Microsoft {
            tenant: "contoso.onmicrosoft.com".into(),
            cloud: MicrosoftCloud::UsGovernment,
        };
        assert_eq!(
            ms.endpoints().token,
            "https://login.microsoftonline.us/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(
            ms.default_scope(true).unwrap(),
            "https://outlook.office365.us/.default"
        );
        assert!(ms.token_endpoint(false).is_ok());
        assert_eq!(
            Provider::Google.default_scope(false).unwrap(),
            "https://mail.google.com/"
        );
        assert!(Provider::Google.endpoints().device.is_none());
        let g = Provider::Generic {
            token_url: "http://127.0.0.1:9/token".into(),
            authorize_url: None,
            device_url: None,
            scope: None,
        };
        assert!(g.token_endpoint(false).is_err());
        assert!(g.token_endpoint(true).is_ok());
    }
}
