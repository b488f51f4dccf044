//! The products' set-up guides, walked through with `postern` against the
//! loopback peers: each guide's settings are a profile file under
//! `tests/guides/` (only the peers' addresses are filled in here), and each
//! guide's steps are the commands an admin runs: authorize ("Authorize" /
//! "Generate Tokens"), `diagnose --send-test` ("Send Test Email"), `send`.
//! After every walk-through the stored authorization still works.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use postern_test_support::{
    Pki, ServerTls, SmtpServer, SmtpServerConfig, TokenServer, TokenServerConfig, Tokens,
};

mod common;

use common::get_location;

const BIN: &str = env!("CARGO_BIN_EXE_postern");

struct Walk {
    smtp: SmtpServer,
    tokens: TokenServer,
    dir: PathBuf,
    config: PathBuf,
}

/// The loopback peers, and `guide` (a profile file) with their addresses.
fn walk(name: &str, guide: &str) -> Walk {
    let dir = std::env::temp_dir().join(format!("postern-guide-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pki = Pki::generate();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let shared = Tokens::default();
    let tokens = TokenServer::start(TokenServerConfig {
        clients: vec![("app".into(), "app~secret".into())],
        tokens: shared.clone(),
        ..Default::default()
    })
    .unwrap();
    let smtp = SmtpServer::start(SmtpServerConfig {
        tls: ServerTls::StartTls(pki.localhost.server_config()),
        users: vec![("alice".into(), "alice-pw".into())],
        tokens: shared,
        require_auth: true,
        keep_bodies: true,
        transcript: true,
        ..Default::default()
    })
    .unwrap();
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/guides")
            .join(guide),
    )
    .unwrap();
    let filled = template
        .replace("{{SMTP_PORT}}", &smtp.port().to_string())
        .replace("{{CA_FILE}}", ca.to_str().unwrap())
        .replace("{{TOKEN_URL}}", &tokens.url())
        .replace("{{AUTHORIZE_URL}}", &tokens.authorize_url())
        .replace("{{STORE}}", dir.join("refresh-token").to_str().unwrap());
    let config = dir.join("config.toml");
    std::fs::write(&config, filled).unwrap();
    Walk {
        smtp,
        tokens,
        dir,
        config,
    }
}

impl Walk {
    /// `postern COMMAND --config ... --profile PROFILE REST...`.
    fn postern(&self, profile: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let (command, rest) = args.split_first().unwrap();
        Command::new(BIN)
            .arg(command)
            .args([
                "--config",
                self.config.to_str().unwrap(),
                "--profile",
                profile,
            ])
            .args(rest)
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    /// [`Walk::postern`], which must succeed; its output.
    fn ok(&self, profile: &str, args: &[&str], env: &[(&str, &str)]) -> String {
        let o = self.postern(profile, args, env);
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{profile} {args:?}: {out}");
        out
    }

    /// `postern authorize` for `profile`: the sign-in address is followed
    /// as a browser would, and the address it ends on is pasted (a web
    /// redirect) or delivered to the loopback listener.
    fn authorize(&self, profile: &str, redirect_uri: Option<&str>, env: &[(&str, &str)]) {
        let mut args = vec![
            "authorize".to_owned(),
            "--config".to_owned(),
            self.config.to_str().unwrap().to_owned(),
            "--profile".to_owned(),
            profile.to_owned(),
        ];
        if let Some(uri) = redirect_uri {
            args.extend(["--redirect-uri".to_owned(), uri.to_owned()]);
        }
        let mut child = Command::new(BIN)
            .args(&args)
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.starts_with("http://"))
            .unwrap();
        std::thread::spawn(move || for _ in lines {});
        let landed = get_location(&url).unwrap();
        match redirect_uri {
            Some(uri) => {
                assert!(landed.starts_with(uri), "{landed}");
                writeln!(child.stdin.take().unwrap(), "{landed}").unwrap();
            }
            None => {
                get_location(&landed);
            }
        }
        assert!(child.wait().unwrap().success(), "authorize {profile}");
    }

    fn last_message(&self) -> String {
        let m = self.smtp.messages();
        String::from_utf8(m.last().unwrap().data.clone().unwrap()).unwrap()
    }
}

impl Drop for Walk {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// KADA K: Microsoft 365 app-only; the test message, then a send.
#[test]
fn kada_k_client_credentials() {
    let w = walk("kada", "kada-k.toml");
    let env = [("KADA_CLIENT_SECRET", "app~secret")];
    let out = w.ok(
        "kada",
        &["diagnose", "--send-test", "rcpt@example.com"],
        &env,
    );
    assert!(out.contains("all steps passed"), "{out}");
    w.ok(
        "kada",
        &["send", "--to", "rcpt@example.com", "--subject", "report"],
        &env,
    );
    assert_eq!(w.smtp.messages().len(), 2);
    // The guide's error case: the secret's id pasted instead of its value
    // gives the diagnosis and Microsoft's error page.
    let o = w.postern(
        "kada",
        &["diagnose"],
        &[("KADA_CLIENT_SECRET", "the-secret-id")],
    );
    assert_eq!(o.status.code(), Some(4));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("ms.secret.wrong"), "{out}");
    assert!(
        out.contains("https://login.microsoftonline.com/error?code=7000215"),
        "{out}"
    );
}

/// KnowledgeOwl: Authorize with a web redirect URI, Send Test Email with
/// From name and Reply-To, then ordinary sends on the stored token.
#[test]
fn knowledgeowl_delegated_web_redirect() {
    let w = walk("knowledgeowl", "knowledgeowl.toml");
    let env = [("KO_CLIENT_SECRET", "app~secret")];
    w.authorize(
        "knowledgeowl",
        Some("https://app.example.com/oauth2/custom-smtp-token"),
        &env,
    );
    let out = w.ok(
        "knowledgeowl",
        &["diagnose", "--send-test", "rcpt@example.com"],
        &env,
    );
    assert!(out.contains("all steps passed"), "{out}");
    let message = w.last_message();
    assert!(
        message.contains("From: \"Knowledge Base\" <sender@example.com>"),
        "{message}"
    );
    assert!(
        message.contains("Reply-To: <help@example.com>"),
        "{message}"
    );
    for _ in 0..2 {
        w.ok("knowledgeowl", &["send", "--to", "rcpt@example.com"], &env);
    }
    assert_eq!(w.smtp.messages().len(), 3);
    assert!(w.tokens.requests() >= 3, "authorize, diagnose, two sends");
}

/// TeamDynamix: Basic, Generic OAuth 2.0, Google and Microsoft accounts.
#[test]
fn teamdynamix_four_account_types() {
    let w = walk("teamdynamix", "teamdynamix.toml");
    let env = [
        ("TD_PASSWORD", "alice-pw"),
        ("TD_CLIENT_SECRET", "app~secret"),
    ];
    w.ok(
        "td-basic",
        &["diagnose", "--send-test", "rcpt@example.com"],
        &env,
    );
    assert!(
        w.smtp
            .transcript()
            .iter()
            .any(|l| l == "C: EHLO td.example.com")
    );
    assert_eq!(w.smtp.auths().last().unwrap().mechanism, "PLAIN");

    w.authorize("td-generic", None, &env);
    w.ok(
        "td-generic",
        &["diagnose", "--send-test", "rcpt@example.com"],
        &env,
    );
    w.ok("td-generic", &["send", "--to", "rcpt@example.com"], &env);

    let callback = "https://td.example.com/TDAdmin/OAuth/Callback";
    for profile in ["td-google", "td-microsoft"] {
        w.authorize(profile, Some(callback), &env);
        w.ok(
            profile,
            &["diagnose", "--send-test", "rcpt@example.com"],
            &env,
        );
        w.ok(profile, &["send", "--to", "rcpt@example.com"], &env);
    }
    assert_eq!(w.smtp.messages().len(), 7);
}
