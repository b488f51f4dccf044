//! Token endpoint requests as complete HTTP/1.1 bytes.
//!
//! Every request is `POST` with `Content-Type: application/x-www-form-urlencoded`,
//! `Accept: application/json`, `Content-Length`, `User-Agent` and
//! `Connection: close` (one request per connection: the response may then be
//! read to the end of the stream).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::form;
use crate::url::Endpoint;
use postern_common::Secret;

/// The `User-Agent` sent unless the caller sets another.
pub const USER_AGENT: &str = concat!("postern/", env!("CARGO_PKG_VERSION"));

/// How the client proves its identity to the token endpoint.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// A public client (desktop app, device flow with PKCE): only `client_id`.
    None,
    /// `client_id` and `client_secret` in the body. The default for Microsoft
    /// and Google (Entra secrets contain `~`, which servers decode differently
    /// in the Basic header).
    SecretPost(Secret),
    /// HTTP Basic with id and secret each form-encoded first (RFC 6749 §2.3.1).
    SecretBasic(Secret),
    /// A signed JWT assertion (`private_key_jwt`, Microsoft certificate
    /// credentials), built with [`crate::jwt::sign`] and
    /// [`crate::jwt::client_assertion_claims`].
    PrivateKeyJwt(Secret),
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientAuth::None => "None",
            ClientAuth::SecretPost(_) => "SecretPost([redacted])",
            ClientAuth::SecretBasic(_) => "SecretBasic([redacted])",
            ClientAuth::PrivateKeyJwt(_) => "PrivateKeyJwt([redacted])",
        })
    }
}

/// The grant of a token request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Grant {
    /// `client_credentials` (app-only: Microsoft `SMTP.SendAsApp`).
    ClientCredentials,
    /// `authorization_code` with the PKCE verifier.
    AuthorizationCode {
        /// The code from the redirect.
        code: Secret,
        /// The redirect URI used in the authorization request.
        redirect_uri: String,
        /// The PKCE verifier, when PKCE was used.
        code_verifier: Option<Secret>,
    },
    /// `refresh_token`.
    RefreshToken {
        /// The refresh token.
        refresh_token: Secret,
    },
    /// Device-code polling (RFC 8628 §3.4).
    DeviceCode {
        /// The `device_code` of the device authorization response.
        device_code: Secret,
    },
    /// RFC 7523 JWT bearer (`urn:ietf:params:oauth:grant-type:jwt-bearer`):
    /// Google service accounts. The assertion carries the identity, so the
    /// client authentication is usually [`ClientAuth::None`] and no client id
    /// is sent.
    JwtBearer {
        /// The signed assertion.
        assertion: Secret,
    },
}

impl Grant {
    /// The `grant_type` value.
    #[must_use]
    pub fn grant_type(&self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client_credentials",
            Grant::AuthorizationCode { .. } => "authorization_code",
            Grant::RefreshToken { .. } => "refresh_token",
            Grant::DeviceCode { .. } => "urn:ietf:params:oauth:grant-type:device_code",
            Grant::JwtBearer { .. } => "urn:ietf:params:oauth:grant-type:jwt-bearer",
        }
    }
}

/// A request ready to write: where to connect and the exact bytes.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpRequest {
    /// The endpoint (host, port, TLS).
    pub endpoint: Endpoint,
    /// The complete HTTP/1.1 request. Holds secrets: never log it.
    pub bytes: Vec<u8>,
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRequest")
            .field("endpoint", &self.endpoint.as_str())
            .field(
                "bytes",
                &format_args!("[{} bytes, redacted]", self.bytes.len()),
            )
            .finish()
    }
}

/// A token request.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TokenRequest {
    /// The token endpoint.
    pub endpoint: Endpoint,
    /// The client id; `None` only for grants whose assertion names the client.
    pub client_id: Option<String>,
    /// Client authentication.
    pub client_auth: ClientAuth,
    /// The grant.
    pub grant: Grant,
    /// Space-separated scopes; `None` leaves them out (a refresh then keeps the
    /// scopes already consented).
    pub scope: Option<String>,
    /// Extra form parameters (for example `resource` for RFC 8707 servers).
    pub extra: Vec<(String, String)>,
    /// The `User-Agent`; default [`USER_AGENT`].
    pub user_agent: Option<String>,
}

impl TokenRequest {
    /// A request with the defaults: no scope, no extras.
    #[must_use]
    pub fn new(
        endpoint: Endpoint,
        client_id: impl Into<String>,
        client_auth: ClientAuth,
        grant: Grant,
    ) -> Self {
        TokenRequest {
            endpoint,
            client_id: Some(client_id.into()),
            client_auth,
            grant,
            scope: None,
            extra: Vec::new(),
            user_agent: None,
        }
    }

    /// Sets the scope.
    #[must_use]
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// The form parameters in the order they are sent.
    #[must_use]
    pub fn form_pairs(&self) -> Vec<(&str, &str)> {
        let mut p: Vec<(&str, &str)> = vec![("grant_type", self.grant.grant_type())];
        let basic = matches!(self.client_auth, ClientAuth::SecretBasic(_));
        if let Some(id) = self.client_id.as_deref().filter(|_| !basic) {
            p.push(("client_id", id));
        }
        match &self.grant {
            Grant::ClientCredentials => {}
            Grant::AuthorizationCode {
                code,
                redirect_uri,
                code_verifier,
            } => {
                p.push(("code", code.expose()));
                p.push(("redirect_uri", redirect_uri));
                if let Some(v) = code_verifier {
                    p.push(("code_verifier", v.expose()));
                }
            }
            Grant::RefreshToken { refresh_token } => {
                p.push(("refresh_token", refresh_token.expose()))
            }
            Grant::DeviceCode { device_code } => p.push(("device_code", device_code.expose())),
            Grant::JwtBearer { assertion } => p.push(("assertion", assertion.expose())),
        }
        if let Some(scope) = &self.scope {
            p.push(("scope", scope));
        }
        match &self.client_auth {
            ClientAuth::SecretPost(s) => p.push(("client_secret", s.expose())),
            ClientAuth::PrivateKeyJwt(a) => {
                p.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ));
                p.push(("client_assertion", a.expose()));
            }
            ClientAuth::None | ClientAuth::SecretBasic(_) => {}
        }
        for (k, v) in &self.extra {
            p.push((k, v));
        }
        p
    }

    /// The complete HTTP/1.1 request.
    #[must_use]
    pub fn to_http(&self) -> HttpRequest {
        let body = form::serialize(self.form_pairs());
        let auth = match (&self.client_auth, &self.client_id) {
            (ClientAuth::SecretBasic(secret), Some(id)) => Some(basic_authorization(id, secret)),
            _ => None,
        };
        post_form(
            &self.endpoint,
            &body,
            auth.as_ref(),
            self.user_agent.as_deref(),
        )
    }
}

/// The `Authorization` value of `client_secret_basic` (RFC 6749 §2.3.1): id and
/// secret each form-encoded, joined with `:`, then Base64.
#[must_use]
pub fn basic_authorization(client_id: &str, secret: &Secret) -> Secret {
    let mut joined = form::encode(client_id);
    joined.push(':');
    form::encode_into(secret.expose(), &mut joined);
    Secret::new(format!("Basic {}", STANDARD.encode(joined)))
}

/// A device authorization request (RFC 8628 §3.1).
#[must_use]
pub fn device_authorization(
    endpoint: &Endpoint,
    client_id: &str,
    scope: &str,
    client_auth: &ClientAuth,
) -> HttpRequest {
    let mut pairs = vec![("client_id", client_id), ("scope", scope)];
    let auth = match client_auth {
        ClientAuth::SecretPost(s) => {
            pairs.push(("client_secret", s.expose()));
            None
        }
        ClientAuth::SecretBasic(s) => {
            pairs.remove(0);
            Some(basic_authorization(client_id, s))
        }
        _ => None,
    };
    post_form(endpoint, &form::serialize(pairs), auth.as_ref(), None)
}

/// A token revocation request (RFC 7009), e.g. to drop a stored refresh token.
#[must_use]
pub fn revocation(
    endpoint: &Endpoint,
    client_id: &str,
    client_auth: &ClientAuth,
    token: &Secret,
) -> HttpRequest {
    let mut pairs = vec![("token", token.expose())];
    let auth = match client_auth {
        ClientAuth::SecretBasic(s) => Some(basic_authorization(client_id, s)),
        ClientAuth::SecretPost(s) => {
            pairs.push(("client_id", client_id));
            pairs.push(("client_secret", s.expose()));
            None
        }
        _ => {
            pairs.push(("client_id", client_id));
            None
        }
    };
    post_form(endpoint, &form::serialize(pairs), auth.as_ref(), None)
}

fn post_form(
    endpoint: &Endpoint,
    body: &str,
    authorization: Option<&Secret>,
    user_agent: Option<&str>,
) -> HttpRequest {
    let mut head = String::with_capacity(256 + body.len());
    head.push_str("POST ");
    head.push_str(endpoint.path_and_query());
    head.push_str(" HTTP/1.1\r\nHost: ");
    head.push_str(&endpoint.host_header());
    head.push_str(
        "\r\nContent-Type: application/x-www-form-urlencoded\r\nAccept: application/json\r\n",
    );
    if let Some(a) = authorization {
        head.push_str("Authorization: ");
        head.push_str(a.expose());
        head.push_str("\r\n");
    }
    head.push_str("User-Agent: ");
    // A user agent with a line break would inject a header: drop such bytes.
    head.extend(
        user_agent
            .unwrap_or(USER_AGENT)
            .chars()
            .filter(|c| !c.is_control()),
    );
    head.push_str("\r\nContent-Length: ");
    head.push_str(&body.len().to_string());
    head.push_str("\r\nConnection: close\r\n\r\n");
    head.push_str(body);
    HttpRequest {
        endpoint: endpoint.clone(),
        bytes: head.into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_credentials_bytes() {
        let ep = Endpoint::parse(
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
        )
        .unwrap();
        let req = TokenRequest::new(
            ep,
            "cid",
            ClientAuth::SecretPost(Secret::new("a~b")),
            Grant::ClientCredentials,
        )
        .scope("https://outlook.office365.com/.default");
        let http = req.to_http();
        let text = String::from_utf8(http.bytes.clone()).unwrap();
        let body = "grant_type=client_credentials&client_id=cid&scope=https%3A%2F%2Foutlook.office365.com%2F.default&client_secret=a%7Eb";
        assert_eq!(
            text,
            format!(
                "POST /contoso.onmicrosoft.com/oauth2/v2.0/token HTTP/1.1\r\nHost: login.microsoftonline.com\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nAccept: application/json\r\n\
                 User-Agent: {USER_AGENT}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        );
        assert!(!format!("{http:?}{req:?}").contains("a~b"));
    }
}
