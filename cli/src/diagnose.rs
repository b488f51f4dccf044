//! `postern diagnose`: the whole chain, step by step, stopping at the first
//! failure with the setup step to fix.

use clap::Args;
use postern_tokio::{Error, Mailbox};

use crate::config::{ProviderKind, Settings};
use crate::fail::{Class, Failure, classify, usage};
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
        fix: Option<(&str, &str)>,
    ) -> Failure {
        self.n += 1;
        println!("[FAIL] {}. {name}: {detail}", self.n);
        if let Some((id, text)) = fix {
            println!("       diagnosis {id}: {text}");
        }
        Failure {
            class,
            message: format!("step {} ({name}) failed", self.n),
            error: None,
        }
    }
}

/// The step an SMTP-side error belongs to.
fn step_of(e: &Error) -> &'static str {
    match e {
        Error::Connect { .. } | Error::ConnectTimeout { .. } => "TCP connection",
        Error::Tls { .. } => "TLS handshake and certificate",
        Error::Smtp(inner) => match &**inner {
            postern_tokio::smtp::Error::StartTlsUnavailable
            | postern_tokio::smtp::Error::StartTlsRefused { .. } => "STARTTLS",
            _ => "SMTP greeting and EHLO",
        },
        Error::Token(_) => "token request",
        Error::Auth(_) | Error::Command(_) => "SMTP AUTH",
        Error::Rejected(_) => "MAIL FROM / RCPT / DATA",
        _ => "SMTP session",
    }
}

/// Runs `postern diagnose`.
pub(crate) async fn run(args: DiagnoseArgs) -> Result<(), Failure> {
    let mut steps = Steps { n: 0 };
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
    let mode = match (&oauth, s.token_env.is_some() || s.token_file.is_some()) {
        (Some(o), _) => format!("OAuth2 token from {}", o.endpoint().as_str()),
        (None, true) => "a given access token".to_owned(),
        (None, false) => "password or no AUTH".to_owned(),
    };
    if host.is_empty() {
        return Err(steps.fail("configuration", Class::Usage, "--host is missing", None));
    }
    steps.ok("configuration", &format!("{host}, {mode}"));

    // 2-3. Token request and claims.
    if let Some(o) = &oauth {
        match token::fetch(&s, o).await {
            Ok(t) => {
                steps.ok(
                    "token request",
                    &format!(
                        "{} token, valid {} s",
                        t.token_type,
                        t.expires_in.map_or(0, |d| d.as_secs())
                    ),
                );
                match token::mail_claims(t.access_token.expose()) {
                    Some(claims) => {
                        let shown: Vec<String> = claims
                            .iter()
                            .filter(|(k, _)| {
                                ["aud", "roles", "scp", "tid", "upn", "appid"].contains(&k.as_str())
                            })
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect();
                        let microsoft = s.provider == Some(ProviderKind::Microsoft)
                            || (s.provider.is_none() && s.token_url.is_none());
                        let problems = if microsoft {
                            token::preflight(&claims, s.refresh_token_file.is_none())
                        } else {
                            Vec::new()
                        };
                        if let Some((id, fix)) = problems.first() {
                            return Err(steps.fail(
                                "token claims",
                                Class::Auth,
                                &shown.join(" "),
                                Some((id, fix)),
                            ));
                        }
                        steps.ok("token claims", &shown.join(" "));
                    }
                    None => steps.ok("token claims", "opaque token (not a JWT): nothing to check"),
                }
            }
            Err(f) => {
                let fix = f.error.as_ref().and_then(|e| match e {
                    Error::Token(t) => match &**t {
                        postern_tokio::oauth::FetchError::OAuth(o) => o.diagnosis(),
                        _ => None,
                    },
                    _ => None,
                });
                let detail = f.message.clone();
                return Err(match fix {
                    Some(d) => steps.fail(
                        "token request",
                        f.class,
                        &detail,
                        Some((d.id, &format!("setup step \"{}\": {}", d.step, d.fix))),
                    ),
                    None => steps.fail("token request", f.class, &detail, None),
                });
            }
        }
    }

    // 4. SMTP: TCP, TLS, EHLO, AUTH.
    let transport = match setup::transport(&s) {
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
            let fix = d.map(|d| (d.id, d.fix));
            return Err(steps.fail(step_of(&e), classify(&e), &e.to_string(), fix));
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
        let (envelope, message) = postern_tokio::Email::new(from)
            .to(to)
            .subject("postern diagnose test message")
            .text("If you can read this, the set-up works.\n")
            .build()?;
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
                let fix = e.diagnosis().map(|d| (d.id, d.fix));
                return Err(steps.fail(step_of(&e), classify(&e), &e.to_string(), fix));
            }
        }
    }
    transport.shutdown().await;
    println!("all steps passed");
    Ok(())
}
