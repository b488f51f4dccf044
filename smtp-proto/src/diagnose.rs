//! Known SMTP-side failures mapped to a stable diagnosis id and a one-line fix
//! (design §5). The ids are part of postern's machine-readable output: tools
//! match on them, so they never change meaning.

use crate::reply::Reply;
use crate::sasl::Mechanism;

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

/// A recognised failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Diagnosis {
    /// The stable id, e.g. `ms.smtp.auth_disabled`.
    pub id: &'static str,
    /// What to do about it, in one line.
    pub fix: &'static str,
}

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
    let e = reply.enhanced().map(|e| (e.class, e.subject, e.detail));
    let microsoft = contains(reply, "outlook.com")
        || contains(reply, "outlook.cn")
        || contains(reply, "office365");
    let google = contains(reply, "gsmtp") || contains(reply, "google.com");
    let d = |id, fix| Some(Diagnosis { id, fix });
    match (context, reply.code(), e) {
        (_, _, Some((5, 7, 139))) => d(
            "ms.smtp.auth_disabled",
            "SMTP AUTH is disabled for this mailbox or tenant: run \
             `Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false` \
             (and check the tenant-wide setting and security defaults)",
        ),
        (_, _, Some((5, 7, 30))) => d(
            "ms.smtp.basic_auth_disabled",
            "the server no longer accepts password (basic) authentication: use OAuth2 (XOAUTH2)",
        ),
        (Context::Auth(m), 535, Some((5, 7, 3))) if m.uses_token() => d(
            "ms.smtp.mailbox_not_mapped",
            "the token is valid but not for this mailbox: register the service principal with \
             `New-ServicePrincipal -AppId <client id> -ObjectId <Enterprise application object id>` \
             (not the App registration's object id), grant it \
             `Add-MailboxPermission -Identity <mailbox> -User <service principal id> -AccessRights FullAccess`, \
             make sure SMTP.SendAsApp is consented and user= is that mailbox; changes take up to an hour",
        ),
        (Context::Auth(_), 535, Some((5, 7, 3))) => d(
            "ms.smtp.auth_unsuccessful",
            "Microsoft 365 refused the credentials: check user name and password, or switch to OAuth2",
        ),
        (Context::Auth(_), 534, Some((5, 7, 9))) => d(
            "google.smtp.app_password_required",
            "Google requires an app password or OAuth2 for this account: use XOAUTH2 with a token \
             for scope https://mail.google.com/",
        ),
        (Context::Auth(m), 535, Some((5, 7, 8))) if google && m.uses_token() => d(
            "google.smtp.token_rejected",
            "Google refused the token: it expired, was revoked, lacks the scope \
             https://mail.google.com/, or was issued for another user than user=",
        ),
        (Context::Auth(m), 535, _) if m.uses_token() => d(
            "smtp.auth.token_rejected",
            "the server refused the access token: check that it is unexpired, issued for this \
             mailbox, and has the scope the server requires",
        ),
        (Context::Auth(_), 535, _) => d(
            "smtp.auth.credentials_rejected",
            "the server refused user name or password",
        ),
        (Context::Auth(_), 454, _) => d(
            "smtp.auth.temporary",
            "the server could not check the credentials right now (its authentication backend or \
             token introspection failed): try again later",
        ),
        (_, 530 | 523 | 538, _) => d(
            "smtp.tls.required",
            "the server requires TLS before authentication: use STARTTLS or implicit TLS",
        ),
        (Context::Mail | Context::Data | Context::Rcpt, _, Some((5, 7, 60))) => d(
            "ms.smtp.send_as_denied",
            "the authenticated mailbox may not send as this From address: send from the \
             authenticated mailbox or grant Send As permission",
        ),
        (Context::Mail | Context::Data, 550 | 554, _)
            if microsoft && contains(reply, "SendAsDenied") =>
        {
            d(
                "ms.smtp.send_as_denied",
                "the authenticated mailbox may not send as this From address: send from the \
             authenticated mailbox or grant Send As permission",
            )
        }
        (_, _, Some((5, 7, 57))) => d(
            "ms.smtp.not_authenticated",
            "the server requires authentication before MAIL FROM: authenticate first",
        ),
        (Context::Mail | Context::Rcpt | Context::Data, 552, _) | (_, _, Some((5, 3, 4))) => d(
            "smtp.message.too_large",
            "the message is larger than the server accepts",
        ),
        _ => None,
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
