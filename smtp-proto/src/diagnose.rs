//! Known SMTP-side failures mapped to a stable diagnosis id and a one-line fix
//! (design §5). The ids are part of postern's machine-readable output: tools
//! match on them, so they never change meaning.

use crate::reply::Reply;
use crate::sasl::Mechanism;

pub use postern_common::{Diagnosis, Stage};

use crate::event::AuthFailureKind;

/// What the client was doing when the reply came.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Context {
    /// AUTH with this mechanism.
    Auth(Mechanism),
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA or the end of the message.
    Data,
    /// STARTTLS or before it.
    Session,
}

impl Context {
    /// The stage of the chain this context belongs to.
    #[must_use]
    pub fn stage(self) -> Stage {
        match self {
            Context::Auth(_) => Stage::Auth,
            Context::Mail | Context::Rcpt | Context::Data => Stage::Transaction,
            Context::Session => Stage::Greeting,
        }
    }
}

/// Which replies a row of the table applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum When {
    /// Any context.
    Any,
    /// AUTH with any mechanism.
    Auth,
    /// AUTH with XOAUTH2 or OAUTHBEARER.
    AuthToken,
    /// MAIL, RCPT or the message.
    Envelope,
    /// MAIL or the message (not RCPT).
    MailOrData,
}

/// Who sent the reply, from its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vendor {
    Any,
    Microsoft,
    Google,
}

/// One known reply: where it applies, what it looks like, how a failed AUTH
/// with it is classified, and what an admin should do.
struct Row {
    when: When,
    /// Reply codes; empty for any.
    codes: &'static [u16],
    /// The enhanced status code `class.subject.detail`, when it decides.
    enhanced: Option<(u8, u16, u16)>,
    vendor: Vendor,
    /// Text the reply must contain (ASCII, any case).
    text: Option<&'static str>,
    /// The classification of a failed AUTH (rows without one leave it to
    /// the next matching row, or to the mechanism).
    kind: Option<AuthFailureKind>,
    diagnosis: Option<Diagnosis>,
}

const fn row(when: When, codes: &'static [u16], enhanced: Option<(u8, u16, u16)>) -> Row {
    Row {
        when,
        codes,
        enhanced,
        vendor: Vendor::Any,
        text: None,
        kind: None,
        diagnosis: None,
    }
}

impl Row {
    const fn vendor(mut self, vendor: Vendor, text: Option<&'static str>) -> Row {
        self.vendor = vendor;
        self.text = text;
        self
    }

    const fn configuration(mut self) -> Row {
        self.kind = Some(AuthFailureKind::Configuration);
        self
    }

    const fn says(mut self, id: &'static str, step: &'static str, fix: &'static str) -> Row {
        // Rows are built in constants: the replaced `None` needs no drop.
        std::mem::forget(self.diagnosis.replace(Diagnosis::new(id, step, fix)));
        self
    }

    fn matches(&self, context: Context, reply: &Reply) -> bool {
        let when = match (self.when, context) {
            (When::Any, _) => true,
            (When::Auth, Context::Auth(_)) => true,
            (When::AuthToken, Context::Auth(m)) => m.uses_token(),
            (When::Envelope, Context::Mail | Context::Rcpt | Context::Data) => true,
            (When::MailOrData, Context::Mail | Context::Data) => true,
            _ => false,
        };
        let enhanced = reply.enhanced().map(|e| (e.class, e.subject, e.detail));
        when && (self.codes.is_empty() || self.codes.contains(&reply.code()))
            && (self.enhanced.is_none() || self.enhanced == enhanced)
            && match self.vendor {
                Vendor::Any => true,
                Vendor::Microsoft => {
                    contains(reply, "outlook.com")
                        || contains(reply, "outlook.cn")
                        || contains(reply, "office365")
                }
                Vendor::Google => contains(reply, "gsmtp") || contains(reply, "google.com"),
            }
            && self.text.is_none_or(|t| contains(reply, t))
    }
}

const SEND_AS: &str = "the authenticated mailbox may not send as this From address: send from the \
                       authenticated mailbox or grant Send As permission";

/// The known SMTP replies, most specific first. Both [`diagnose`] and the
/// classification of a failed AUTH read this one table.
const TABLE: &[Row] = &[
    row(When::Any, &[], Some((5, 7, 139))).configuration().says(
        "ms.smtp.auth_disabled",
        "mailbox SMTP AUTH setting",
        "SMTP AUTH is disabled for this mailbox or tenant: run \
         `Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false` \
         (and check the tenant-wide setting and security defaults)",
    ),
    row(When::Any, &[], Some((5, 7, 30))).configuration().says(
        "ms.smtp.basic_auth_disabled",
        "authentication method",
        "the server no longer accepts password (basic) authentication: use OAuth2 (XOAUTH2)",
    ),
    row(When::Auth, &[], Some((5, 7, 10))).configuration(),
    row(When::Auth, &[], Some((5, 7, 11))).configuration(),
    row(When::Auth, &[504], None).configuration(),
    row(When::AuthToken, &[535], Some((5, 7, 3))).says(
        "ms.smtp.mailbox_not_mapped",
        "mailbox permission",
        "the token is valid but not for this mailbox: register the service principal with \
         `New-ServicePrincipal -AppId <client id> -ObjectId <Enterprise application object id>` \
         (not the App registration's object id), grant it \
         `Add-MailboxPermission -Identity <mailbox> -User <service principal id> -AccessRights FullAccess`, \
         make sure SMTP.SendAsApp is consented and user= is that mailbox; changes take up to an hour",
    ),
    row(When::Auth, &[535], Some((5, 7, 3))).says(
        "ms.smtp.auth_unsuccessful",
        "credentials",
        "Microsoft 365 refused the credentials: check user name and password, or switch to OAuth2",
    ),
    row(When::Auth, &[534], Some((5, 7, 9))).says(
        "google.smtp.app_password_required",
        "authentication method",
        "Google requires an app password or OAuth2 for this account: use XOAUTH2 with a token \
         for scope https://mail.google.com/",
    ),
    row(When::AuthToken, &[535], Some((5, 7, 8)))
        .vendor(Vendor::Google, None)
        .says(
            "google.smtp.token_rejected",
            "token",
            "Google refused the token: it expired, was revoked, lacks the scope \
             https://mail.google.com/, or was issued for another user than user=",
        ),
    row(When::AuthToken, &[535], None).says(
        "smtp.auth.token_rejected",
        "token",
        "the server refused the access token: check that it is unexpired, issued for this \
         mailbox, and has the scope the server requires",
    ),
    row(When::Auth, &[535], None).says(
        "smtp.auth.credentials_rejected",
        "credentials",
        "the server refused user name or password",
    ),
    row(When::Auth, &[454], None).says(
        "smtp.auth.temporary",
        "server",
        "the server could not check the credentials right now (its authentication backend or \
         token introspection failed): try again later",
    ),
    row(When::Any, &[], Some((5, 7, 57))).says(
        "ms.smtp.not_authenticated",
        "authentication",
        "the server requires authentication before MAIL FROM: authenticate first",
    ),
    row(When::Any, &[530, 523, 538], None).configuration().says(
        "smtp.tls.required",
        "TLS mode",
        "the server requires TLS before authentication: use STARTTLS or implicit TLS",
    ),
    row(When::Envelope, &[], Some((5, 7, 60))).says("ms.smtp.send_as_denied", "sender address", SEND_AS),
    row(When::MailOrData, &[550, 554], None)
        .vendor(Vendor::Microsoft, Some("SendAsDenied"))
        .says("ms.smtp.send_as_denied", "sender address", SEND_AS),
    row(When::Any, &[432], Some((4, 3, 2))).says(
        "ms.smtp.concurrent_connections",
        "connection limit",
        "the mailbox has too many SMTP connections open at once (Exchange Online allows 3): \
         send through fewer connections (postern's pool max_connections) and retry later",
    ),
    row(When::Envelope, &[554, 550], Some((5, 2, 0)))
        .vendor(Vendor::Any, Some("SubmissionQuotaExceeded"))
        .says(
            "ms.smtp.recipient_quota_exceeded",
            "sending limit",
            "the mailbox reached its daily recipient limit (Exchange Online: 10,000 recipients \
             a day): wait until the 24-hour window rolls over, or spread the mail over more mailboxes",
        ),
    row(When::Any, &[430, 432, 451], Some((4, 2, 0)))
        .vendor(Vendor::Any, Some("MapiExceptionLogonFailed"))
        .says(
            "ms.smtp.mailbox_logon_failed",
            "mailbox permission",
            "Exchange could not open the mailbox for this login: grant the app or user FullAccess \
             (`Add-MailboxPermission -Identity <mailbox> -User <service principal id> -AccessRights FullAccess`) \
             and check that user= is that mailbox; changes take up to an hour",
        ),
    row(When::Any, &[501], Some((5, 5, 127))).says(
        "ms.smtp.token_lifetime_too_short",
        "token refresh margin",
        "the access token expires too soon for this service (Microsoft's High Volume Email needs \
         tokens valid for at least 10 more minutes): refresh earlier (CacheConfig expiry_margin \
         of 10 minutes or more)",
    ),
    row(When::Envelope, &[552], None).says(
        "smtp.message.too_large",
        "message size",
        "the message is larger than the server accepts",
    ),
    row(When::Any, &[], Some((5, 3, 4))).says(
        "smtp.message.too_large",
        "message size",
        "the message is larger than the server accepts",
    ),
];

fn contains(reply: &Reply, needle: &str) -> bool {
    let needle = needle.as_bytes();
    reply
        .raw_text()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Looks `reply` up. Returns `None` for replies with no known cause.
#[must_use]
pub fn diagnose(context: Context, reply: &Reply) -> Option<Diagnosis> {
    TABLE
        .iter()
        .filter(|r| r.diagnosis.is_some())
        .find(|r| r.matches(context, reply))
        .and_then(|r| r.diagnosis.clone())
}

/// Classifies a failed AUTH from its final reply (the same table as
/// [`diagnose`]): temporary for 4xx, configuration for a server-side setting
/// no credential can pass, otherwise the credentials or the token.
pub(crate) fn classify_auth(
    mechanism: Mechanism,
    reply: &Reply,
    cancelled: bool,
) -> AuthFailureKind {
    if cancelled {
        return AuthFailureKind::Cancelled;
    }
    if reply.is_transient() {
        return AuthFailureKind::Temporary;
    }
    let context = Context::Auth(mechanism);
    match TABLE
        .iter()
        .filter(|r| r.kind.is_some())
        .find(|r| r.matches(context, reply))
        .and_then(|r| r.kind)
    {
        Some(kind) => kind,
        None if mechanism.uses_token() => AuthFailureKind::TokenRejected,
        None => AuthFailureKind::CredentialsRejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::ReplyParser;

    fn reply(wire: &[u8]) -> Reply {
        ReplyParser::default().parse(wire).unwrap().1.unwrap()
    }

    #[test]
    fn microsoft_and_google() {
        let disabled = reply(b"535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. [MN2PR05CA0004.namprd05.prod.outlook.com]\r\n");
        assert_eq!(
            diagnose(Context::Auth(Mechanism::XOAuth2), &disabled)
                .unwrap()
                .id,
            "ms.smtp.auth_disabled"
        );
        let not_mapped = reply(
            b"535 5.7.3 Authentication unsuccessful [SN2PR00CA0018.namprd00.prod.outlook.com]\r\n",
        );
        assert_eq!(
            diagnose(Context::Auth(Mechanism::XOAuth2), &not_mapped)
                .unwrap()
                .id,
            "ms.smtp.mailbox_not_mapped"
        );
        assert_eq!(
            diagnose(Context::Auth(Mechanism::Login), &not_mapped)
                .unwrap()
                .id,
            "ms.smtp.auth_unsuccessful"
        );
        let gmail = reply(b"535-5.7.8 Username and Password not accepted. Learn more at\r\n535 5.7.8  https://support.google.com/mail/?p=BadCredentials - gsmtp\r\n");
        assert_eq!(
            diagnose(Context::Auth(Mechanism::XOAuth2), &gmail)
                .unwrap()
                .id,
            "google.smtp.token_rejected"
        );
        let send_as = reply(b"554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied [BN6PR.prod.outlook.com]\r\n");
        assert_eq!(
            diagnose(Context::Data, &send_as).unwrap().id,
            "ms.smtp.send_as_denied"
        );
        assert_eq!(diagnose(Context::Rcpt, &reply(b"250 ok\r\n")), None);
    }
}
