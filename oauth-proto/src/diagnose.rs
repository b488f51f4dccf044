//! Diagnoses for admins: each known token-endpoint failure mapped to a stable
//! id, the setup step that is wrong, and a one-line fix (the link is added by
//! [`crate::OAuthError::diagnosis`]). Ids are stable: tools
//! consume them (the same ids as the project's test vectors).

use crate::response::OAuthError;

pub use postern_common::Diagnosis;

macro_rules! d {
    ($id:expr, $step:expr, $fix:expr) => {
        Diagnosis::new($id, $step, $fix)
    };
}

/// Microsoft Entra `AADSTS` codes.
const MICROSOFT: &[(u64, Diagnosis)] = &[
    (
        7000215,
        d!(
            "ms.secret.wrong",
            "client secret",
            "The client secret is wrong: use the secret's Value (shown once when it was created), not its Secret ID (a GUID)."
        ),
    ),
    (
        7000222,
        d!(
            "ms.secret.expired",
            "client secret",
            "The client secret has expired: create a new one under Certificates & secrets and update the configuration (stored refresh tokens stay valid)."
        ),
    ),
    (
        700016,
        d!(
            "ms.app.not_found",
            "app registration",
            "No application with this client id in the tenant: check the Application (client) ID and the tenant id, and that the app is registered (or consented) in this tenant."
        ),
    ),
    (
        90002,
        d!(
            "ms.tenant.not_found",
            "tenant",
            "The tenant id or domain is wrong or empty, or the tenant is in another cloud (US Government, China): check the tenant and the authority host."
        ),
    ),
    (
        70011,
        d!(
            "ms.scope.invalid",
            "scope",
            "The scope is not valid: app-only use https://outlook.office365.com/.default, delegated use https://outlook.office.com/SMTP.Send offline_access."
        ),
    ),
    (
        1002012,
        d!(
            "ms.scope.cc_requires_default",
            "scope",
            "Client credentials need the .default scope: use https://outlook.office365.com/.default, not SMTP.Send or offline_access."
        ),
    ),
    (
        700022,
        d!(
            "ms.scope.mixed_resources",
            "scope",
            "Scopes of two resources were requested together (e.g. Graph and Outlook): request only https://outlook.office.com/SMTP.Send (plus offline_access)."
        ),
    ),
    (
        65001,
        d!(
            "ms.consent.missing",
            "consent",
            "Consent is missing: grant admin consent for the API permissions (SMTP.SendAsApp or SMTP.Send) in the app registration."
        ),
    ),
    (
        50076,
        d!(
            "ms.mfa.required",
            "sign-in policy",
            "Conditional Access requires MFA or interaction: use the authorization code flow (postern authorize) or client credentials, not a password grant."
        ),
    ),
    (
        50079,
        d!(
            "ms.mfa.required",
            "sign-in policy",
            "Conditional Access requires MFA or interaction: use the authorization code flow (postern authorize) or client credentials, not a password grant."
        ),
    ),
    (
        700082,
        d!(
            "ms.rt.inactive",
            "refresh token",
            "The refresh token expired after 90 days without use: run the authorization again; refresh regularly to keep it alive."
        ),
    ),
    (
        70008,
        d!(
            "ms.rt.inactive",
            "refresh token",
            "The refresh token or code has expired: run the authorization again."
        ),
    ),
    (
        9002313,
        d!(
            "ms.rt.malformed",
            "refresh token",
            "The refresh token is malformed or truncated: check how it was stored (whole value, no quotes or line breaks), or authorize again."
        ),
    ),
    (
        54005,
        d!(
            "client.concurrency.double_redeem",
            "authorization code",
            "The same authorization code was redeemed twice: redeem each code once (run one authorization at a time)."
        ),
    ),
    (
        700024,
        d!(
            "client.clock_skew",
            "clock",
            "The client assertion's time is outside the allowed window: set this machine's clock right (NTP) and keep assertions short-lived."
        ),
    ),
    (
        900023,
        d!(
            "config.token_url_wrong",
            "token URL",
            "The tenant in the token URL is not valid: use https://login.microsoftonline.com/<tenant id or domain>/oauth2/v2.0/token."
        ),
    ),
];

const GOOGLE_RT_REVOKED: Diagnosis = d!(
    "google.rt.revoked",
    "refresh token",
    "The refresh token is expired or revoked (an app in Testing gets 7-day tokens; users can revoke access): authorize again, and publish the OAuth consent screen to In production."
);
const GOOGLE_DWD: Diagnosis = d!(
    "google.dwd.not_authorized",
    "domain-wide delegation",
    "The service account may not act for this user: add its client id with scope https://mail.google.com/ under Security > API controls > Domain-wide delegation in the Admin console."
);
const GOOGLE_DEVICE: Diagnosis = d!(
    "google.device_flow.gmail_unsupported",
    "grant",
    "Google's device flow does not allow Gmail scopes: use the authorization code flow with a loopback redirect (postern authorize)."
);
const CLOCK_SKEW: Diagnosis = d!(
    "client.clock_skew",
    "clock",
    "The assertion's iat/exp are outside the server's window: set this machine's clock right (NTP); assertions may last at most an hour."
);
/// The token URL answered with something that is not a token endpoint.
pub const TOKEN_URL_WRONG: Diagnosis = d!(
    "config.token_url_wrong",
    "token URL",
    "The token URL does not point at a token endpoint (an HTML page or 404 came back): check the URL (it ends in /token) and any proxy in between."
);

/// The diagnosis of an OAuth error, when it is a known one. Microsoft errors
/// are keyed on `error_codes` (the `error` string is not stable there).
#[must_use]
pub fn diagnose(e: &OAuthError) -> Option<Diagnosis> {
    for code in &e.error_codes {
        if let Some((_, d)) = MICROSOFT.iter().find(|(c, _)| c == code) {
            return Some(d.clone());
        }
    }
    let desc = e
        .error_description
        .as_deref()
        .unwrap_or("")
        .to_ascii_lowercase();
    match e.error.as_str() {
        "invalid_grant"
            if desc.contains("invalid jwt") || (desc.contains("iat") && desc.contains("exp")) =>
        {
            Some(CLOCK_SKEW)
        }
        "invalid_grant"
            if desc.contains("expired or revoked") || desc.contains("token has been expired") =>
        {
            Some(GOOGLE_RT_REVOKED)
        }
        "unauthorized_client" if desc.contains("client is unauthorized") => Some(GOOGLE_DWD),
        "invalid_scope" if desc.contains("device flow scope") => Some(GOOGLE_DEVICE),
        _ => None,
    }
}

/// The diagnosis for an id, to print the fix of an id found elsewhere.
#[must_use]
pub fn by_id(id: &str) -> Option<Diagnosis> {
    MICROSOFT
        .iter()
        .map(|(_, d)| d.clone())
        .chain([
            GOOGLE_RT_REVOKED,
            GOOGLE_DWD,
            GOOGLE_DEVICE,
            CLOCK_SKEW,
            TOKEN_URL_WRONG,
        ])
        .find(|d| d.id == id)
}
