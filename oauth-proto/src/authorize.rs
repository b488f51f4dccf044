//! The authorization code flow's browser half: the authorization URL, and the
//! redirect that comes back (RFC 6749 §4.1, RFC 7636).

use std::fmt;

use crate::form;
use postern_common::{Secret, sanitize};

/// An authorization request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthorizationRequest {
    /// The authorization endpoint.
    pub endpoint: String,
    /// The client id.
    pub client_id: String,
    /// Where the provider sends the browser back (a loopback URL for a CLI).
    pub redirect_uri: String,
    /// Space-separated scopes.
    pub scope: String,
    /// The anti-CSRF state (from caller-supplied randomness).
    pub state: String,
    /// The PKCE S256 challenge.
    pub code_challenge: Option<String>,
    /// Pre-fills the account (`login_hint`).
    pub login_hint: Option<String>,
    /// `prompt` (`consent`, `select_account`, ...).
    pub prompt: Option<String>,
    /// More parameters (Google `access_type=offline`).
    pub extra: Vec<(String, String)>,
}

impl AuthorizationRequest {
    /// A request for `scope` with `state`; no PKCE challenge, hint, prompt
    /// or extra parameter until set.
    #[must_use]
    pub fn new(
        endpoint: impl Into<String>,
        client_id: impl Into<String>,
        redirect_uri: impl Into<String>,
        scope: impl Into<String>,
        state: impl Into<String>,
    ) -> Self {
        AuthorizationRequest {
            endpoint: endpoint.into(),
            client_id: client_id.into(),
            redirect_uri: redirect_uri.into(),
            scope: scope.into(),
            state: state.into(),
            code_challenge: None,
            login_hint: None,
            prompt: None,
            extra: Vec::new(),
        }
    }

    /// The URL to open in a browser.
    #[must_use]
    pub fn url(&self) -> String {
        let mut pairs: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &self.client_id),
            ("redirect_uri", &self.redirect_uri),
            ("scope", &self.scope),
            ("state", &self.state),
        ];
        if let Some(c) = &self.code_challenge {
            pairs.push(("code_challenge", c));
            pairs.push(("code_challenge_method", "S256"));
        }
        if let Some(h) = &self.login_hint {
            pairs.push(("login_hint", h));
        }
        if let Some(p) = &self.prompt {
            pairs.push(("prompt", p));
        }
        for (k, v) in &self.extra {
            if !pairs.iter().any(|(pk, _)| pk == k) {
                pairs.push((k, v));
            }
        }
        let sep = if self.endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}{}", self.endpoint, form::serialize(pairs))
    }
}

/// What came back to the redirect URI.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedirectError {
    /// The provider reported an error (the user declined, consent needed...).
    Denied {
        /// `error`.
        error: String,
        /// `error_description`.
        description: Option<String>,
        /// Where the provider explains the error: `error_uri`, or
        /// Microsoft's page for the AADSTS code in the description.
        link: Option<String>,
    },
    /// `state` is missing or differs: not the answer to our request (CSRF).
    StateMismatch,
    /// No `code`.
    MissingCode,
}

impl fmt::Display for RedirectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedirectError::Denied {
                error,
                description,
                link,
            } => {
                // All come from the redirect URL, which anyone can craft:
                // no control characters (terminal escapes), bounded length.
                write!(f, "authorization refused: {}", sanitize(error, 64))?;
                if let Some(d) = description {
                    write!(f, ": {}", sanitize(d.lines().next().unwrap_or(""), 300))?;
                }
                if let Some(l) = link {
                    write!(f, " more: {}", sanitize(l, 100))?;
                }
                Ok(())
            }
            RedirectError::StateMismatch => f.write_str(
                "the redirect's state does not match the request (not our authorization)",
            ),
            RedirectError::MissingCode => f.write_str("the redirect carries no authorization code"),
        }
    }
}

impl std::error::Error for RedirectError {}

/// Parses the redirect: a full URL, a request target (`/callback?code=...`)
/// or a bare query, and checks `state`. Returns the code.
pub fn parse_redirect(redirect: &str, expected_state: &str) -> Result<Secret, RedirectError> {
    let redirect = redirect.trim();
    let query = redirect
        .split_once('?')
        .map_or(redirect, |(_, q)| q)
        .split('#')
        .next()
        .unwrap_or("");
    let pairs = form::parse(query);
    let get = |k: &str| pairs.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.clone());
    let state_ok = get("state").is_some_and(|s| s == expected_state);
    if let Some(error) = get("error") {
        // An error with the wrong state is still not ours.
        if !state_ok {
            return Err(RedirectError::StateMismatch);
        }
        let description = get("error_description");
        let link = get("error_uri")
            .filter(|u| !u.trim().is_empty())
            .or_else(|| description.as_deref().and_then(aadsts_link));
        return Err(RedirectError::Denied {
            error,
            description,
            link,
        });
    }
    if !state_ok {
        return Err(RedirectError::StateMismatch);
    }
    get("code")
        .filter(|c| !c.is_empty())
        .map(Secret::new)
        .ok_or(RedirectError::MissingCode)
}

/// Microsoft's error page for the first `AADSTS<code>` in `text`.
fn aadsts_link(text: &str) -> Option<String> {
    let at = text.find("AADSTS")? + "AADSTS".len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty() && digits.len() <= 9)
        .then(|| format!("https://login.microsoftonline.com/error?code={digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_redirects_carry_the_link() {
        let e = parse_redirect(
            "https://app.example.com/cb?error=invalid_request&error_description=AADSTS50011%3A+The+redirect+URI+does+not+match&state=s",
            "s",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .ends_with("more: https://login.microsoftonline.com/error?code=50011"),
            "{e}"
        );
        let e = parse_redirect(
            "/cb?error=access_denied&error_uri=https%3A%2F%2Fidp.example.com%2Fhelp&state=s",
            "s",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .ends_with("more: https://idp.example.com/help"),
            "{e}"
        );
    }

    #[test]
    fn url_and_redirect() {
        let req = AuthorizationRequest {
            endpoint: "https://accounts.google.com/o/oauth2/v2/auth".into(),
            client_id: "id".into(),
            redirect_uri: "http://127.0.0.1:8765/callback".into(),
            scope: "https://mail.google.com/".into(),
            state: "st".into(),
            code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
            login_hint: Some("a@b.example".into()),
            prompt: None,
            extra: vec![("access_type".into(), "offline".into())],
        };
        assert_eq!(
            req.url(),
            "https://accounts.google.com/o/oauth2/v2/auth?response_type=code&client_id=id&\
             redirect_uri=http%3A%2F%2F127.0.0.1%3A8765%2Fcallback&scope=https%3A%2F%2Fmail.google.com%2F&state=st&\
             code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&\
             login_hint=a%40b.example&access_type=offline"
        );
        assert_eq!(
            parse_redirect("/callback?code=abc%2F1&state=st", "st")
                .unwrap()
                .expose(),
            "abc/1"
        );
        assert_eq!(
            parse_redirect("http://127.0.0.1/cb?code=x&state=evil", "st"),
            Err(RedirectError::StateMismatch)
        );
        assert_eq!(
            parse_redirect("code=x", "st"),
            Err(RedirectError::StateMismatch)
        );
        assert_eq!(
            parse_redirect("?state=st", "st"),
            Err(RedirectError::MissingCode)
        );
        assert_eq!(
            parse_redirect("?error=access_denied&error_description=no&state=st", "st"),
            Err(RedirectError::Denied {
                error: "access_denied".into(),
                description: Some("no".into()),
                link: None,
            })
        );
    }
}
