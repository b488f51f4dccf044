//! What an access token's claims say before the SMTP server does (design §5):
//! the JWT payload is decoded without checking its signature (the server
//! checks it) and compared with what Exchange Online needs, so an admin
//! learns "wrong audience" or "no SMTP.SendAsApp role" instead of a bare
//! `535 5.7.3`.

use serde_json::{Map, Value};

use crate::jwt::decode_claims_unverified;
use postern_common::Diagnosis;

/// The claims that matter for mail, in the order a person reads them.
pub const MAIL_CLAIMS: &[&str] = &[
    "aud",
    "iss",
    "tid",
    "appid",
    "azp",
    "app_displayname",
    "upn",
    "unique_name",
    "email",
    "sub",
    "oid",
    "roles",
    "scp",
    "scope",
    "exp",
];

/// The claims a one-line summary shows.
pub const SUMMARY_CLAIMS: &[&str] = &["aud", "roles", "scp", "tid", "upn", "appid"];

/// The mail-related claims of `token`, or `None` for an opaque (non-JWT)
/// token.
#[must_use]
pub fn mail_claims(token: &str) -> Option<Map<String, Value>> {
    let all = decode_claims_unverified(token)?;
    Some(
        all.into_iter()
            .filter(|(k, _)| MAIL_CLAIMS.contains(&k.as_str()))
            .collect(),
    )
}

/// How the token was obtained, which decides the permission it must carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GrantKind {
    /// Client credentials (or a certificate): an application permission,
    /// `roles` ∋ `SMTP.SendAsApp`.
    AppOnly,
    /// A user's consent (refresh token, code): a delegated scope,
    /// `scp` ∋ `SMTP.Send`.
    Delegated,
}

const WRONG_AUDIENCE: Diagnosis = Diagnosis::new(
    "ms.token.wrong_audience",
    "scope",
    "the token is not for Exchange Online: use scope https://outlook.office365.com/.default (app-only) or https://outlook.office.com/SMTP.Send (delegated)",
);
const MISSING_ROLE: Diagnosis = Diagnosis::new(
    "ms.app.missing_permission",
    "API permissions",
    "the token has no SMTP.SendAsApp role: add the Office 365 Exchange Online application permission SMTP.SendAsApp and grant admin consent",
);
const MISSING_SCOPE: Diagnosis = Diagnosis::new(
    "ms.delegated.missing_scope",
    "API permissions",
    "the token has no SMTP.Send scope: add the delegated permission SMTP.Send and sign in again",
);

/// Checks the claims of a Microsoft access token against what Exchange
/// Online needs for `grant`. Returns the problems found, most basic first;
/// empty when the token looks right.
#[must_use]
pub fn preflight(claims: &Map<String, Value>, grant: GrantKind) -> Vec<Diagnosis> {
    let text = |k: &str| claims.get(k).map(Value::to_string).unwrap_or_default();
    let mut problems = Vec::new();
    let aud = text("aud");
    if !aud.contains("outlook.office") && !aud.contains("00000002-0000-0ff1-ce00-000000000000") {
        problems.push(WRONG_AUDIENCE);
    }
    match grant {
        GrantKind::AppOnly if !text("roles").contains("SMTP.SendAsApp") => {
            problems.push(MISSING_ROLE);
        }
        GrantKind::Delegated if !text("scp").contains("SMTP.Send") => {
            problems.push(MISSING_SCOPE);
        }
        _ => {}
    }
    problems
}

/// The Exchange Online PowerShell steps that let an app-only token send as
/// `mailbox`, with this app's values filled in from its token: the `appid`
/// claim, and the `oid` claim, which is the object id of the Enterprise
/// application (service principal) that `New-ServicePrincipal` needs, not
/// the App registration's object id that admins often copy by mistake.
/// `None` when the token lacks either claim.
#[must_use]
pub fn exchange_app_checklist(claims: &Map<String, Value>, mailbox: &str) -> Option<Vec<String>> {
    let appid = claims
        .get("appid")
        .or_else(|| claims.get("azp"))?
        .as_str()?;
    let oid = claims.get("oid")?.as_str()?;
    let mut steps = vec![
        "Connect-ExchangeOnline".to_owned(),
        format!("New-ServicePrincipal -AppId {appid} -ObjectId {oid}"),
    ];
    if !mailbox.is_empty() {
        steps.push(format!(
            "Add-MailboxPermission -Identity {mailbox} -User {oid} -AccessRights FullAccess"
        ));
    }
    Some(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn checklist_uses_the_enterprise_application_id() {
        let c = claims(json!({"appid": "11111111-aaaa", "oid": "22222222-bbbb", "roles": []}));
        let steps = exchange_app_checklist(&c, "reports@contoso.com").unwrap_or_default();
        assert_eq!(
            steps[1..],
            [
                "New-ServicePrincipal -AppId 11111111-aaaa -ObjectId 22222222-bbbb",
                "Add-MailboxPermission -Identity reports@contoso.com -User 22222222-bbbb -AccessRights FullAccess"
            ]
        );
        assert!(exchange_app_checklist(&claims(json!({"appid": "x"})), "m").is_none());
    }

    #[test]
    fn app_only_and_delegated() {
        let good_app =
            claims(json!({"aud": "https://outlook.office365.com", "roles": ["SMTP.SendAsApp"]}));
        assert!(preflight(&good_app, GrantKind::AppOnly).is_empty());
        let ids = |c: &Map<String, Value>, g| -> Vec<&str> {
            preflight(c, g).into_iter().map(|d| d.id).collect()
        };
        assert_eq!(
            ids(&good_app, GrantKind::Delegated),
            ["ms.delegated.missing_scope"]
        );
        let graph = claims(json!({"aud": "https://graph.microsoft.com", "roles": []}));
        assert_eq!(
            ids(&graph, GrantKind::AppOnly),
            ["ms.token.wrong_audience", "ms.app.missing_permission"]
        );
        let exo_guid =
            claims(json!({"aud": "00000002-0000-0ff1-ce00-000000000000", "scp": "SMTP.Send"}));
        assert!(preflight(&exo_guid, GrantKind::Delegated).is_empty());
    }
}
