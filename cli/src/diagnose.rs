//! `postern diagnose`: the whole chain, step by step, stopping at the first
//! failure with the setup step to fix.

use clap::Args;
use postern_oauth::preflight::{GrantKind, exchange_app_checklist, preflight};
use postern_oauth::preflight::{SUMMARY_CLAIMS, mail_claims};
use postern_tokio::{Diagnosis, Error, Mailbox, Stage};

use crate::config::{ProviderKind, Settings};
use crate::fail::{Class, Failure, classify, tls_hint, usage};
use crate::{setup, token};

/// Arguments of `postern diagnose`.
#[derive(Args, Debug)]
pub(crate) struct DiagnoseArgs {
    #[command(flatten)]
    pub(crate) settings: Settings,
    /// Also send a test message to this address (checks MAIL FROM, RCPT,
    /// DATA: "send as" rights).
    #[arg(long)]
    send_test: Option<String>,
}

struct Steps {
    n: u32,
    /// The mailbox, put into fixes that name `<mailbox>`.
    mailbox: String,
}

impl Steps {
    fn ok(&mut self, name: &str, detail: &str) {
        self.n += 1;
        println!("[ ok ] {}. {name}: {detail}", self.n);
    }

    fn fail(
        &mut self,
        name: &str,
        class: Class,
        detail: &str,
        diagnosis: Option<&Diagnosis>,
    ) -> Failure {
        self.n += 1;
        println!("[FAIL] {}. {name}: {detail}", self.n);
        if let Some(d) = diagnosis {
            let fix = if self.mailbox.is_empty() {
                d.fix.to_owned()
            } else {
                d.fix.replace("<mailbox>", &self.mailbox)
            };
            println!(
                "       diagnosis {}: setup step \"{}\": {fix}",
                d.id, d.step
            );
            if let Some(link) = &d.link {
                println!("       more: {link}");
            }
        }
        Failure {
            class,
            message: format!("step {} ({name}) failed", self.n),
            error: None,
        }
    }
}

/// Prints the Exchange Online steps for this app-only token, filled in.
fn checklist(claims: &serde_json::Map<String, serde_json::Value>, mailbox: &str) {
    if let Some(lines) = exchange_app_checklist(claims, mailbox) {
        println!("       Exchange Online set-up for this app (Exchange Online PowerShell; the");
        println!("       ObjectId is the Enterprise application's, taken from the token's oid):");
        for line in lines {
            println!("         {}", token::shown(&line));
        }
    }
}

/// Runs `postern diagnose`.
pub(crate) async fn run(args: DiagnoseArgs) -> Result<(), Failure> {
    let mut steps = Steps {
        n: 0,
        mailbox: String::new(),
    };
    // 1. Configuration.
    let s = match args.settings.clone().resolve() {
        Ok(s) => s,
        Err(f) => return Err(steps.fail("configuration", Class::Usage, &f.message, None)),
    };
    let oauth = match setup::oauth(&s) {
        Ok(o) => o,
        Err(f) => return Err(steps.fail("configuration", Class::Usage, &f.message, None)),
    };
    let host = s.host.clone().unwrap_or_default();
    steps.mailbox = s
        .user
        .clone()
        .or_else(|| s.from.clone())
        .unwrap_or_default();
    let mode = match (&oauth, s.token_env.is_some() || s.token_file.is_some()) {
        (Some(o), _) => format!("OAuth2 token from {}", o.endpoint().as_str()),
        (None, true) => "a given access token".to_owned(),
        (None, false) => "password or no AUTH".to_owned(),
    };
    if host.is_empty() {
        return Err(steps.fail("configuration", Class::Usage, "--host is missing", None));
    }
    steps.ok("configuration", &format!("{host}, {mode}"));

    // 2-3. Token request and claims. A refresh token is redeemed here only;
    // a rotated one is stored before anything else, and the later steps use
    // this access token.
    let mut fetched = None;
    if let Some(o) = &oauth {
        match token::fetch(&s, o).await {
            Ok(t) => {
                fetched = Some(t.access_token.clone());
                steps.ok(
                    "token request",
                    &format!(
                        "{} token, valid {} s",
                        token::shown(&t.token_type),
                        t.expires_in.map_or(0, |d| d.as_secs())
                    ),
                );
                match mail_claims(t.access_token.expose()) {
                    Some(claims) => {
                        let shown: Vec<String> = claims
                            .iter()
                            .filter(|(k, _)| SUMMARY_CLAIMS.contains(&k.as_str()))
                            .map(|(k, v)| format!("{k}={}", token::shown(&v.to_string())))
                            .collect();
                        let microsoft = s.provider == Some(ProviderKind::Microsoft)
                            || (s.provider.is_none() && s.token_url.is_none());
                        let problems = if microsoft {
                            preflight(&claims, o.grant_kind())
                        } else {
                            Vec::new()
                        };
                        if let Some(d) = problems.first() {
                            return Err(steps.fail(
                                Stage::Claims.name(),
                                Class::Auth,
                                &shown.join(" "),
                                Some(d),
                            ));
                        }
                        steps.ok("token claims", &shown.join(" "));
                        if microsoft && o.grant_kind() == GrantKind::AppOnly {
                            checklist(&claims, &steps.mailbox);
                        }
                    }
                    None => steps.ok("token claims", "opaque token (not a JWT): nothing to check"),
                }
            }
            Err(f) => {
                let d = f.error.as_ref().and_then(Error::diagnosis);
                return Err(steps.fail(Stage::Token.name(), f.class, &f.message, d.as_ref()));
            }
        }
    }

    // 4. SMTP: TCP, TLS, EHLO, AUTH.
    let transport = match setup::transport_with(&s, fetched) {
        Ok(t) => t,
        Err(f) => return Err(steps.fail("configuration", f.class, &f.message, None)),
    };
    match transport.check().await {
        Ok(()) => steps.ok(
            "SMTP connection, TLS, EHLO and AUTH",
            &format!("{host} accepted the login"),
        ),
        Err(e) => {
            let d = e.diagnosis();
            let detail = match tls_hint(&e, s.tls.unwrap_or_default()) {
                Some(h) => format!("{e} (hint: {h})"),
                None => e.to_string(),
            };
            return Err(steps.fail(e.stage().name(), classify(&e), &detail, d.as_ref()));
        }
    }

    // 5. Optional test message.
    if let Some(to) = &args.send_test {
        let from = s
            .from
            .clone()
            .or_else(|| s.user.clone())
            .ok_or_else(|| usage("--from is required for --send-test"))?;
        let from = Mailbox::parse(&from).map_err(|e| usage(format!("--from: {e}")))?;
        let to = Mailbox::parse(to).map_err(|e| usage(format!("--send-test: {e}")))?;
        // The test message carries the From name and Reply-To a real one
        // would: the "Send Test Email" of a product's settings page.
        let mut email = postern_tokio::Email::new(from)
            .to(to)
            .subject("postern diagnose test message")
            .text("If you can read this, the set-up works.\n");
        if let Some(name) = &s.from_name {
            email = email.from_name(name.clone());
        }
        if let Some(r) = &s.reply_to {
            let r = Mailbox::parse(r).map_err(|e| usage(format!("--reply-to: {e}")))?;
            email = email.reply_to(r);
        }
        let (envelope, message) = email.build()?;
        match transport.send(&envelope, message).await {
            Ok(r) if r.all_accepted() => {
                steps.ok("MAIL FROM / RCPT / DATA", "test message accepted")
            }
            Ok(_) => {
                return Err(steps.fail(
                    "MAIL FROM / RCPT / DATA",
                    Class::Rejected,
                    "a recipient was refused",
                    None,
                ));
            }
            Err(e) => {
                let d = e.diagnosis();
                return Err(steps.fail(e.stage().name(), classify(&e), &e.to_string(), d.as_ref()));
            }
        }
    }
    transport.shutdown().await;
    println!("all steps passed");
    Ok(())
}
