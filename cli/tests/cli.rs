//! The `postern` binary against the loopback peers: every subcommand, the
//! JSON output, each exit-code class from a real failure.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use postern_test_support::{
    Pki, ServerTls, SmtpServer, SmtpServerConfig, TokenServer, TokenServerConfig, Tokens,
};
use serde_json::Value;

mod common;

use common::get_location;

const BIN: &str = env!("CARGO_BIN_EXE_postern");

struct Peers {
    tokens: Tokens,
    token_server: TokenServer,
    smtp: SmtpServer,
    ca_file: PathBuf,
    dir: PathBuf,
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("postern-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A token endpoint (client `app`, public client `pub`) and a STARTTLS
/// SMTP server accepting its tokens and the password of `alice`.
fn peers(name: &str, smtp_tokens: Option<Tokens>, reject: &[&str]) -> Peers {
    let pki = Pki::generate();
    let dir = temp_dir(name);
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let tokens = Tokens::default();
    let token_server = TokenServer::start(TokenServerConfig {
        clients: vec![("app".into(), "app~secret".into())],
        public_clients: vec!["pub".into()],
        assertion_clients: vec!["cert-app".into()],
        tokens: tokens.clone(),
        ..Default::default()
    })
    .unwrap();
    let smtp = SmtpServer::start(SmtpServerConfig {
        tls: ServerTls::StartTls(pki.localhost.server_config()),
        users: vec![("alice".into(), "alice-pw".into())],
        tokens: smtp_tokens.unwrap_or_else(|| tokens.clone()),
        require_auth: true,
        reject_recipients: reject.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    })
    .unwrap();
    Peers {
        tokens,
        token_server,
        smtp,
        ca_file,
        dir,
    }
}

fn postern(args: &[&str], env: &[(&str, &str)]) -> Output {
    let home = std::env::temp_dir();
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("HOME", home)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Peers {
    fn port(&self) -> String {
        self.smtp.port().to_string()
    }

    fn ca(&self) -> &str {
        self.ca_file.to_str().unwrap()
    }

    /// `send` with a password, over STARTTLS with the CA file.
    fn send_password(&self, password: &str, extra: &[&str]) -> Output {
        let port = self.port();
        let mut args = vec![
            "send",
            "--host",
            "localhost",
            "--port",
            &port,
            "--ca-file",
            self.ca(),
            "--user",
            "alice",
            "--password-env",
            "PW",
            "--from",
            "sender@example.com",
        ];
        args.extend_from_slice(extra);
        postern(&args, &[("PW", password)])
    }

    fn oauth_args(&self) -> Vec<String> {
        [
            "--host",
            "localhost",
            "--port",
            &self.port(),
            "--ca-file",
            self.ca(),
            "--provider",
            "generic",
            "--token-url",
            &self.token_server.url(),
            "--allow-http-token-url",
            "--client-id",
            "app",
            "--client-secret-env",
            "SECRET",
            "--user",
            "sender@example.com",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o.stdout)))
}

#[test]
fn demo_sends_through_the_whole_flow() {
    let o = postern(&["demo"], &[]);
    let out = text(&o.stdout);
    assert_eq!(code(&o), 0, "{out}{}", text(&o.stderr));
    assert!(out.contains("C: STARTTLS"), "{out}");
    assert!(
        out.contains("C: AUTH XOAUTH2 [initial response redacted]"),
        "{out}"
    );
    assert!(out.contains("S: 235 2.7.0"), "{out}");
    assert!(out.contains("token requests: 1"), "{out}");
    assert!(!out.contains("demo-client-secret"), "{out}");
    let path = out
        .lines()
        .find_map(|l| l.strip_prefix("message stored at "))
        .unwrap();
    let stored = std::fs::read_to_string(path).unwrap();
    assert!(stored.contains("Subject: Hello from postern"), "{stored}");
    std::fs::remove_dir_all(Path::new(path).parent().unwrap()).unwrap();
}

#[test]
fn send_with_password_over_starttls_json() {
    let p = peers("password", None, &[]);
    let o = p.send_password(
        "alice-pw",
        &[
            "--to",
            "rcpt@example.com",
            "--subject",
            "cli test",
            "--from-name",
            "CLI",
            "--reply-to",
            "help@example.com",
            "--json",
        ],
    );
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let v = json(&o);
    assert_eq!(v["ok"], true);
    assert_eq!(v["report"]["recipients"][0]["address"], "rcpt@example.com");
    assert_eq!(v["report"]["recipients"][0]["reply"]["code"], 250);
    assert_eq!(v["report"]["final"]["enhanced"], "2.0.0");
    let got = &p.smtp.messages()[0];
    let data = text(got.data.as_deref().unwrap());
    assert!(data.contains("Subject: cli test\r\n"), "{data}");
    assert!(
        data.contains("From: \"CLI\" <sender@example.com>\r\n"),
        "{data}"
    );
    assert!(data.contains("Reply-To: <help@example.com>\r\n"), "{data}");
    assert_eq!(got.user.as_deref(), Some("alice"));
}

/// `--dkim-key`: every message is signed with the key, for the From
/// domain; the selector is required.
#[test]
fn send_signs_with_dkim() {
    let p = peers("dkim", None, &[]);
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../adapter-tokio/tests/data/test-only-dkim-ed25519.pem"
    );
    let o = p.send_password(
        "alice-pw",
        &[
            "--to",
            "rcpt@example.com",
            "--subject",
            "signed",
            "--dkim-key",
            key,
            "--dkim-selector",
            "cli2026",
        ],
    );
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let data = text(p.smtp.messages()[0].data.as_deref().unwrap());
    assert!(
        data.starts_with("DKIM-Signature: v=1; a=ed25519-sha256;"),
        "{data}"
    );
    assert!(
        data.contains(" s=cli2026;") && data.contains(" d=example.com;"),
        "{data}"
    );

    // A raw file: signed in a first pass, streamed in the second.
    let raw = p.dir.join("raw.eml");
    std::fs::write(
        &raw,
        "From: sender@example.com\nSubject: raw\n\n.dot line\n",
    )
    .unwrap();
    let o = p.send_password(
        "alice-pw",
        &[
            "--to",
            "rcpt@example.com",
            "--raw-file",
            raw.to_str().unwrap(),
            "--dkim-key",
            key,
            "--dkim-selector",
            "cli2026",
        ],
    );
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let data = text(p.smtp.messages()[1].data.as_deref().unwrap());
    assert!(
        data.starts_with("DKIM-Signature: v=1; a=ed25519-sha256;"),
        "{data}"
    );
    assert!(
        data.ends_with("Subject: raw\r\n\r\n.dot line\r\n"),
        "{data}"
    );

    let o = p.send_password("alice-pw", &["--to", "rcpt@example.com", "--dkim-key", key]);
    assert_eq!(code(&o), 2, "a usage error");
    assert!(
        text(&o.stderr).contains("--dkim-selector"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(p.smtp.messages().len(), 2, "nothing sent");
}

#[test]
fn send_with_token_and_with_oauth2() {
    let p = peers("token", None, &[]);
    let token = p.tokens.issue();
    let port = p.port();
    let o = postern(
        &[
            "send",
            "--host",
            "localhost",
            "--port",
            &port,
            "--ca-file",
            p.ca(),
            "--auth",
            "xoauth2",
            "--user",
            "sender@example.com",
            "--token-env",
            "TOK",
            "--to",
            "rcpt@example.com",
        ],
        &[("TOK", &token), ("POSTERN_FROM", "sender@example.com")],
    );
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert_eq!(p.smtp.auths()[0].mechanism, "XOAUTH2");

    let mut args = vec!["send".to_owned()];
    args.extend(p.oauth_args());
    args.extend(["--to".to_owned(), "rcpt@example.com".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = postern(&args, &[("SECRET", "app~secret")]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert_eq!(p.token_server.requests(), 1);
    assert_eq!(p.smtp.messages().len(), 2);
}

#[test]
fn exit_codes_by_failure_class() {
    let p = peers("exit", None, &["nobody@example.com"]);
    // 2: usage (no host).
    let o = postern(
        &["send", "--from", "a@example.com", "--to", "b@example.com"],
        &[],
    );
    assert_eq!(code(&o), 2, "{}", text(&o.stderr));
    // 2: a secret given as a literal is not accepted from a nodemailer file.
    // 3: TLS failure (the test CA is not trusted without --ca-file).
    let port = p.port();
    let o = postern(
        &[
            "send",
            "--host",
            "localhost",
            "--port",
            &port,
            "--user",
            "alice",
            "--password-env",
            "PW",
            "--from",
            "sender@example.com",
            "--to",
            "rcpt@example.com",
            "--json",
        ],
        &[("PW", "alice-pw")],
    );
    assert_eq!(code(&o), 3, "{}", text(&o.stderr));
    assert_eq!(json(&o)["error"]["class"], "connection");
    // 3: nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port().to_string();
    drop(closed);
    let o = postern(
        &[
            "send",
            "--host",
            "127.0.0.1",
            "--port",
            &closed_port,
            "--tls",
            "none",
            "--from",
            "a@example.com",
            "--to",
            "b@example.com",
        ],
        &[],
    );
    assert_eq!(code(&o), 3, "{}", text(&o.stderr));
    // 4: wrong password; the password is not printed.
    let o = p.send_password("wrong-pw", &["--to", "rcpt@example.com", "--json"]);
    assert_eq!(code(&o), 4, "{}", text(&o.stderr));
    let v = json(&o);
    assert_eq!(v["error"]["class"], "authentication");
    assert!(!text(&o.stdout).contains("wrong-pw") && !text(&o.stderr).contains("wrong-pw"));
    // 5: every recipient refused.
    let o = p.send_password("alice-pw", &["--to", "nobody@example.com", "--json"]);
    assert_eq!(code(&o), 5, "{}", text(&o.stderr));
    let v = json(&o);
    assert_eq!(v["error"]["class"], "rejected");
    assert_eq!(v["report"]["recipients"][0]["reply"]["code"], 550);
    assert_eq!(v["report"]["recipients"][0]["reply"]["enhanced"], "5.1.1");
    // 5: one of two refused; the other got the message.
    let o = p.send_password(
        "alice-pw",
        &[
            "--to",
            "rcpt@example.com",
            "--to",
            "nobody@example.com",
            "--json",
        ],
    );
    assert_eq!(code(&o), 5, "{}", text(&o.stderr));
    let v = json(&o);
    assert_eq!(v["ok"], false);
    assert_eq!(v["report"]["recipients"][0]["accepted"], true);
    assert_eq!(v["report"]["recipients"][1]["accepted"], false);
}

#[test]
fn diagnose_names_the_failing_step() {
    // All good.
    let p = peers("diag-ok", None, &[]);
    let mut args = vec!["diagnose".to_owned()];
    args.extend(p.oauth_args());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = postern(&argv, &[("SECRET", "app~secret")]);
    let out = text(&o.stdout);
    assert_eq!(code(&o), 0, "{out}{}", text(&o.stderr));
    assert!(out.contains("all steps passed"), "{out}");

    // AADSTS7000215: the token request step, with the fix and trace id.
    let o = postern(&argv, &[("SECRET", "the-secret-id-not-its-value")]);
    let out = text(&o.stdout);
    assert_eq!(code(&o), 4, "{out}");
    assert!(out.contains("[FAIL] 2. token request"), "{out}");
    assert!(out.contains("ms.secret.wrong"), "{out}");
    assert!(out.contains("trace id 0e1b2c3d"), "{out}");
    assert!(!out.contains("the-secret-id-not-its-value"), "{out}");

    // A token the SMTP server rejects: the AUTH step.
    let p = peers("diag-auth", Some(Tokens::default()), &[]);
    let mut args = vec!["diagnose".to_owned()];
    args.extend(p.oauth_args());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = postern(&argv, &[("SECRET", "app~secret")]);
    let out = text(&o.stdout);
    assert_eq!(code(&o), 4, "{out}");
    assert!(out.contains("[FAIL]") && out.contains("SMTP AUTH"), "{out}");
    assert!(out.contains("535"), "{out}");

    // A certificate that is not trusted: the TLS step.
    let argv: Vec<&str> = argv
        .iter()
        .copied()
        .filter(|a| *a != "--ca-file" && *a != p.ca())
        .collect();
    let o = postern(&argv, &[("SECRET", "app~secret")]);
    let out = text(&o.stdout);
    assert_eq!(code(&o), 3, "{out}");
    assert!(
        out.contains("[FAIL]") && out.contains("TLS handshake and certificate"),
        "{out}"
    );
}

#[test]
fn profiles_and_nodemailer_import() {
    let p = peers("profile", None, &[]);
    let config = p.dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[profiles.test]\nhost = \"localhost\"\nport = 1\nca_file = {:?}\nuser = \"alice\"\npassword_env = \"PW\"\nfrom = \"sender@example.com\"\n",
            p.ca()
        ),
    )
    .unwrap();
    let port = p.port();
    // The flag wins over the profile's wrong port.
    let o = postern(
        &[
            "send",
            "--config",
            config.to_str().unwrap(),
            "--profile",
            "test",
            "--port",
            &port,
            "--to",
            "rcpt@example.com",
        ],
        &[("PW", "alice-pw")],
    );
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    // An unknown profile is a usage error naming the ones there are.
    let o = postern(
        &[
            "send",
            "--config",
            config.to_str().unwrap(),
            "--profile",
            "nope",
            "--to",
            "a@example.com",
        ],
        &[],
    );
    assert_eq!(code(&o), 2);
    assert!(text(&o.stderr).contains("test"), "{}", text(&o.stderr));

    // A nodemailer block with OAuth2 client credentials.
    let nm = p.dir.join("nodemailer.json");
    let block = serde_json::json!({
        "host": "localhost", "port": p.smtp.port(), "secure": false, "requireTLS": true,
        "auth": {"user": "sender@example.com"},
        "oauth2": {"host": p.token_server.url(), "grantType": "client_credentials",
                   "clientId": "app", "clientSecret": "env:NM_SECRET", "scope": "mail"}
    });
    std::fs::write(&nm, block.to_string()).unwrap();
    let o = postern(
        &[
            "send",
            "--nodemailer",
            nm.to_str().unwrap(),
            "--ca-file",
            p.ca(),
            "--allow-http-token-url",
            "--from",
            "sender@example.com",
            "--to",
            "rcpt@example.com",
        ],
        &[("NM_SECRET", "app~secret")],
    );
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert_eq!(p.smtp.auths().last().unwrap().mechanism, "XOAUTH2");
    // A literal secret in the block is refused.
    let literal = block.to_string().replace("env:NM_SECRET", "app~secret");
    std::fs::write(&nm, literal).unwrap();
    let o = postern(
        &[
            "send",
            "--nodemailer",
            nm.to_str().unwrap(),
            "--to",
            "a@example.com",
        ],
        &[],
    );
    assert_eq!(code(&o), 2);
    assert!(text(&o.stderr).contains("env:"), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("app~secret"));
}

fn authorize_child(p: &Peers, store: &Path, extra: &[&str]) -> std::process::Child {
    let url = p.token_server.url();
    let authorize = p.token_server.authorize_url();
    let mut args = vec![
        "authorize",
        "--provider",
        "generic",
        "--token-url",
        &url,
        "--authorize-url",
        &authorize,
        "--allow-http-token-url",
        "--client-id",
        "pub",
        "--scope",
        "mail offline_access",
        "--refresh-token-file",
        store.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Command::new(BIN)
        .args(&args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn read_url(child: &mut std::process::Child) -> String {
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("http://"))
        .unwrap();
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    url
}

fn assert_stored(store: &Path) -> String {
    let token = std::fs::read_to_string(store).unwrap();
    assert!(token.starts_with("rt-"), "{token}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(store).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    token
}

#[test]
fn authorize_with_loopback_redirect_then_send() {
    let p = peers("authorize", None, &[]);
    let store = p.dir.join("refresh-token");
    let mut child = authorize_child(&p, &store, &[]);
    let url = read_url(&mut child);
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    let redirect = get_location(&url).unwrap();
    assert!(redirect.starts_with("http://127.0.0.1:"), "{redirect}");
    get_location(&redirect);
    assert!(child.wait().unwrap().success());
    assert_stored(&store);

    // The stored refresh token drives a delegated send.
    let port = p.port();
    let token_url = p.token_server.url();
    let o = postern(
        &[
            "send",
            "--host",
            "localhost",
            "--port",
            &port,
            "--ca-file",
            p.ca(),
            "--provider",
            "generic",
            "--token-url",
            &token_url,
            "--allow-http-token-url",
            "--client-id",
            "pub",
            "--refresh-token-file",
            store.to_str().unwrap(),
            "--user",
            "sender@example.com",
            "--to",
            "rcpt@example.com",
        ],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
}

#[test]
fn authorize_by_pasting_the_redirect() {
    let p = peers("paste", None, &[]);
    let store = p.dir.join("refresh-token");
    let mut child = authorize_child(&p, &store, &["--paste"]);
    let url = read_url(&mut child);
    let redirect = get_location(&url).unwrap();
    assert!(
        redirect.starts_with("http://localhost/?code="),
        "{redirect}"
    );
    writeln!(child.stdin.take().unwrap(), "{redirect}").unwrap();
    assert!(child.wait().unwrap().success());
    assert_stored(&store);
}

#[test]
fn authorize_with_the_device_flow() {
    let p = peers("device", None, &[]);
    let store = p.dir.join("refresh-token");
    let device = p.token_server.device_url();
    let child = authorize_child(&p, &store, &["--device", "--device-url", &device]);
    let o = child.wait_with_output().unwrap();
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("USER-0001"), "{err}");
    assert_stored(&store);
}

#[test]
fn token_command_redacts_unless_asked() {
    let p = peers("token-cmd", None, &[]);
    let mut args = vec!["token".to_owned()];
    args.extend(p.oauth_args());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = postern(&argv, &[("SECRET", "app~secret")]);
    let out = text(&o.stdout);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert!(out.contains("expires in:  3600 s"), "{out}");
    assert!(out.contains("[redacted"), "{out}");
    assert!(!out.contains("at-1-"), "{out}");
    let mut argv = argv;
    argv.extend(["--show-token", "--json"]);
    let o = postern(&argv, &[("SECRET", "app~secret")]);
    let v = json(&o);
    assert!(v["access_token"].as_str().unwrap().starts_with("at-2-"));
    assert_eq!(v["expires_in"], 3600);
}

#[test]
fn certificate_credential_signs_an_assertion() {
    let p = peers("certificate", None, &[]);
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../oauth-proto/tests/data/test-only-rsa-key.pem"
    );
    let port = p.port();
    let token_url = p.token_server.url();
    let o = postern(
        &[
            "send",
            "--host",
            "localhost",
            "--port",
            &port,
            "--ca-file",
            p.ca(),
            "--provider",
            "generic",
            "--token-url",
            &token_url,
            "--allow-http-token-url",
            "--client-id",
            "cert-app",
            "--certificate-key",
            key,
            "--certificate-thumbprint",
            "8B:1F:00:3A:5C:77:10:9E:42:AA:0B:CD:EF:12:34:56:78:90:AB:CD",
            "--user",
            "sender@example.com",
            "--to",
            "rcpt@example.com",
        ],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert_eq!(p.token_server.requests(), 1);
}

/// A plaintext server without AUTH that records the dialogue, offering
/// 8BITMIME and SMTPUTF8 or neither.
fn international_server(offers: bool) -> SmtpServer {
    SmtpServer::start(SmtpServerConfig {
        eight_bit_mime: offers,
        smtputf8: offers,
        keep_bodies: true,
        transcript: true,
        ..Default::default()
    })
    .unwrap()
}

fn send_plain(server: &SmtpServer, extra: &[&str]) -> Output {
    let port = server.port().to_string();
    let mut args = vec![
        "send",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--tls",
        "none",
        "--auth",
        "none",
        "--from",
        "sender@example.com",
    ];
    args.extend_from_slice(extra);
    postern(&args, &[])
}

fn commands(server: &SmtpServer) -> Vec<String> {
    server
        .transcript()
        .into_iter()
        .filter_map(|l| l.strip_prefix("C: ").map(str::to_owned))
        .collect()
}

/// An internationalized recipient: the message the CLI builds declares
/// SMTPUTF8 (and the 8-bit data it carries) when the server offers it, and
/// is refused before MAIL, with the reason, when it does not.
#[test]
fn international_recipient_declared_or_refused_before_any_command() {
    let server = international_server(true);
    let o = send_plain(
        &server,
        &[
            "--to",
            "j\u{f6}ran@example.com",
            "--subject",
            "hi",
            "--body",
            "hello",
        ],
    );
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let mail = commands(&server)
        .into_iter()
        .find(|c| c.starts_with("MAIL FROM:"))
        .unwrap();
    assert!(mail.contains(" SMTPUTF8"), "{mail}");
    assert!(mail.contains(" BODY=8BITMIME"), "{mail}");
    assert_eq!(server.messages()[0].to, ["j\u{f6}ran@example.com"]);

    let none = international_server(false);
    let o = send_plain(
        &none,
        &["--to", "j\u{f6}ran@example.com", "--body", "hello"],
    );
    assert_eq!(code(&o), 5, "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("SMTPUTF8"), "{}", text(&o.stderr));
    let sent = commands(&none);
    assert!(sent.iter().any(|c| c.starts_with("EHLO")), "{sent:?}");
    assert!(!sent.iter().any(|c| c.starts_with("MAIL")), "{sent:?}");
}

/// A raw file with 8-bit text is scanned before it streams: `BODY=8BITMIME`
/// when offered, a refusal before MAIL when not.
#[test]
fn eight_bit_raw_file_declared_or_refused_before_any_command() {
    let dir = temp_dir("eightbit");
    let path = dir.join("message.eml");
    let message = "From: <sender@example.com>\r\nTo: <rcpt@example.com>\r\nSubject: caf\u{e9}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nD\u{e9}j\u{e0} vu.\r\n";
    std::fs::write(&path, message).unwrap();
    let file = path.to_str().unwrap();

    let server = international_server(true);
    let o = send_plain(&server, &["--to", "rcpt@example.com", "--raw-file", file]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let mail = commands(&server)
        .into_iter()
        .find(|c| c.starts_with("MAIL FROM:"))
        .unwrap();
    assert!(mail.contains(" BODY=8BITMIME"), "{mail}");
    assert!(mail.contains(" SMTPUTF8"), "UTF-8 in Subject: {mail}");
    assert_eq!(
        server.messages()[0].data.as_deref(),
        Some(message.as_bytes())
    );

    let none = international_server(false);
    let o = send_plain(&none, &["--to", "rcpt@example.com", "--raw-file", file]);
    assert_eq!(code(&o), 5, "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("SMTPUTF8") || err.contains("8BITMIME"),
        "{err}"
    );
    assert!(!commands(&none).iter().any(|c| c.starts_with("MAIL")));
    let _ = std::fs::remove_dir_all(&dir);
}

/// True when `s` holds nothing a terminal would act on: no control
/// character but the line breaks the CLI writes itself, no bidi or
/// invisible format character.
fn terminal_safe(s: &str) -> bool {
    !s.chars().any(|c| {
        (c.is_control() && c != '\n')
            || matches!(u32::from(c), 0x200B..=0x200F | 0x202A..=0x202E | 0x2066..=0x2069 | 0xFEFF)
    })
}

/// A hostile server and a hostile token endpoint: ANSI escapes, BEL, NUL,
/// CR and a U+202E bidi override in their text reach the terminal escaped,
/// never as is.
#[test]
fn peer_text_is_escaped_on_the_terminal() {
    const HOSTILE: &str = "5.7.8 \x1b[2J\x1b]0;pwned\x07 bad\0 \rcreds \u{202e}moc.elpmaxe";
    let pki = Pki::generate();
    let dir = temp_dir("hostile");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let smtp = SmtpServer::start(SmtpServerConfig {
        tls: ServerTls::StartTls(pki.localhost.server_config()),
        auth_reply: Some(format!("535 {HOSTILE}")),
        ..Default::default()
    })
    .unwrap();
    let port = smtp.port().to_string();
    let o = postern(
        &[
            "send",
            "--host",
            "localhost",
            "--port",
            &port,
            "--ca-file",
            ca.to_str().unwrap(),
            "--user",
            "alice",
            "--password-env",
            "PW",
            "--from",
            "a@example.com",
            "--to",
            "b@example.com",
        ],
        &[("PW", "pw")],
    );
    assert_eq!(code(&o), 4);
    let err = text(&o.stderr);
    assert!(terminal_safe(&err), "{err:?}");
    assert!(
        err.contains("\\x1b[2J") && err.contains("\\u{202e}moc.elpmaxe"),
        "{err}"
    );

    // The token endpoint's description, through `token` and `diagnose`.
    let tokens = TokenServer::start(TokenServerConfig::default()).unwrap();
    let body = format!(
        r#"{{"error":"invalid_client\u001b[31m","error_description":"{}","error_codes":[7000215]}}"#,
        HOSTILE
            .replace('\x1b', "\\u001b")
            .replace('\x07', "\\u0007")
            .replace('\0', "\\u0000")
            .replace('\r', "\\r")
    );
    tokens.force_response(Some((401, &body)));
    let url = tokens.url();
    for command in ["token", "diagnose"] {
        let o = postern(
            &[
                command,
                "--host",
                "localhost",
                "--provider",
                "generic",
                "--token-url",
                &url,
                "--allow-http-token-url",
                "--client-id",
                "app",
                "--client-secret-env",
                "S",
                "--user",
                "a@example.com",
            ],
            &[("S", "secret")],
        );
        assert_eq!(code(&o), 4, "{command}");
        let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
        assert!(terminal_safe(&all), "{command}: {all:?}");
        assert!(all.contains("\\u{202e}moc.elpmaxe"), "{command}: {all}");
        assert!(all.contains("ms.secret.wrong"), "{command}: {all}");
        assert!(
            all.contains("https://login.microsoftonline.com/error?code=7000215"),
            "{command}: the error link: {all}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The value of `key` in the query of `url` (percent-decoding not needed
/// for the test peers' values).
fn query_value(url: &str, key: &str) -> String {
    url.split(['?', '&'])
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap()
        .to_owned()
}

/// A web redirect URI as registered in the guides, with the app's client
/// secret and PKCE: the admin pastes the address the browser ended on, or
/// only the code.
#[test]
fn authorize_with_a_web_redirect_uri() {
    let p = peers("web-redirect", None, &[]);
    const WEB: &str = "https://app.example.com/oauth2/custom-smtp-token";
    let web_child = |store: &Path| {
        let url = p.token_server.url();
        let authorize = p.token_server.authorize_url();
        Command::new(BIN)
            .args([
                "authorize",
                "--provider",
                "generic",
                "--token-url",
                &url,
                "--authorize-url",
                &authorize,
                "--allow-http-token-url",
                "--client-id",
                "app",
                "--client-secret-env",
                "S",
                "--scope",
                "mail offline_access",
                "--redirect-uri",
                WEB,
                "--refresh-token-file",
                store.to_str().unwrap(),
            ])
            .env_clear()
            .env("S", "app~secret")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The whole address the browser ended on.
    let store = p.dir.join("rt-web");
    let mut child = web_child(&store);
    let url = read_url(&mut child);
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert!(
        url.contains("redirect_uri=https%3A%2F%2Fapp.example.com"),
        "{url}"
    );
    let landed = get_location(&url).unwrap();
    assert!(landed.starts_with(&format!("{WEB}?code=")), "{landed}");
    writeln!(child.stdin.take().unwrap(), "{landed}").unwrap();
    assert!(child.wait().unwrap().success());
    assert_stored(&store);

    // Only the code.
    let store = p.dir.join("rt-code");
    let mut child = web_child(&store);
    let landed = get_location(&read_url(&mut child)).unwrap();
    writeln!(
        child.stdin.take().unwrap(),
        "{}",
        query_value(&landed, "code")
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert_stored(&store);

    // The provider redirected with an error (AADSTS50011, a redirect URI
    // mismatch): the command ends at once with the error and its escaped
    // description.
    let store = p.dir.join("rt-error");
    let mut child = web_child(&store);
    let state = query_value(&read_url(&mut child), "state");
    writeln!(
        child.stdin.take().unwrap(),
        "{WEB}?error=invalid_request&error_description=AADSTS50011%3A+The+redirect+URI+does+not+match%1B%5B2J&state={state}"
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(4));
    assert!(!store.exists());
}

/// An error redirect to the loopback listener ends the command at once.
#[test]
fn authorize_error_redirect_on_the_loopback_listener() {
    let p = peers("loopback-error", None, &[]);
    let store = p.dir.join("refresh-token");
    let mut child = authorize_child(&p, &store, &[]);
    let url = read_url(&mut child);
    let redirect_uri = query_value(&url, "redirect_uri")
        .replace("%3A", ":")
        .replace("%2F", "/");
    let state = query_value(&url, "state");
    get_location(&format!(
        "{redirect_uri}?error=access_denied&error_description=consent+refused&state={state}"
    ));
    let started = std::time::Instant::now();
    let o = child.wait_with_output().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(4));
    assert!(!store.exists());
}

/// The nodemailer block of a product guide (`mail.smtp` in its `local.js`),
/// taken verbatim: process.env values, a template literal, single quotes,
/// trailing commas, the `mail: { smtp: ... }` nesting. The Microsoft token
/// URL selects the Microsoft provider with the tenant from the environment.
#[test]
fn nodemailer_block_from_the_guide_verbatim() {
    let guide = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/guides/syca-local.js");
    let env = [
        ("TAS_SMTP_AUTH_USER", "sender@example.com"),
        ("TAS_SMTP_OAUTH_TENANT_ID", "contoso.onmicrosoft.com"),
        ("TAS_SMTP_OAUTH_CLIENT_SECRET", "app~secret"),
        ("TAS_SMTP_OAUTH_CLIENT_ID", "app"),
    ];
    // As written: the configuration step names Exchange Online and the
    // tenant's token URL (there is no network here, so the token request
    // itself fails and names its step).
    let o = postern(&["diagnose", "--nodemailer", guide], &env);
    let out = text(&o.stdout);
    assert!(
        out.contains("[ ok ] 1. configuration: smtp.office365.com, OAuth2 token from https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"),
        "{out}{}",
        text(&o.stderr)
    );
    assert!(out.contains("[FAIL] 2. token request"), "{out}");
    assert!(!text(&o.stderr).contains("not used"), "{}", text(&o.stderr));

    // The same block against the loopback peers (flags win over the block):
    // a message goes through with the block's user, client id and secret.
    let p = peers("nodemailer-guide", None, &[]);
    let token_url = p.token_server.url();
    let port = p.port();
    let o = postern(
        &[
            "send",
            "--nodemailer",
            guide,
            "--host",
            "localhost",
            "--port",
            &port,
            "--ca-file",
            p.ca(),
            "--tls",
            "starttls",
            "--provider",
            "generic",
            "--token-url",
            &token_url,
            "--allow-http-token-url",
            "--scope",
            "mail",
            "--from",
            "sender@example.com",
            "--to",
            "rcpt@example.com",
        ],
        &env,
    );
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert_eq!(p.smtp.messages().len(), 1);
    assert_eq!(p.smtp.auths()[0].user, "sender@example.com");

    // A key postern does not use is reported, and an unset variable named.
    let dir = temp_dir("nodemailer-keys");
    let file = dir.join("local.js");
    std::fs::write(
        &file,
        "module.exports = { mail: { smtp: { host: process.env.NOPE_HOST, pool: true, port: 587 } } };",
    )
    .unwrap();
    let o = postern(
        &[
            "send",
            "--nodemailer",
            file.to_str().unwrap(),
            "--to",
            "a@example.com",
        ],
        &[],
    );
    assert_eq!(code(&o), 2);
    assert!(text(&o.stderr).contains("NOPE_HOST"), "{}", text(&o.stderr));
    std::fs::write(
        &file,
        "module.exports = { mail: { smtp: { host: 'h', pool: true, port: 587 } } };",
    )
    .unwrap();
    let o = postern(&["token", "--nodemailer", file.to_str().unwrap()], &[]);
    assert!(
        text(&o.stderr).contains("not used by postern: mail.smtp.pool"),
        "{}",
        text(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Settings that drifted: environment variables for the EHLO name and
/// certificate checking are honoured; a profile holds From name and
/// Reply-To; the provider names its submission server; `token` needs no
/// mailbox; credentials without TLS only to a loopback address.
#[test]
fn settings_defaults_and_loopback_plaintext() {
    // POSTERN_EHLO_NAME reaches the server.
    let server = SmtpServer::start(SmtpServerConfig {
        transcript: true,
        keep_bodies: true,
        ..Default::default()
    })
    .unwrap();
    let o = postern(
        &[
            "send",
            "--host",
            "127.0.0.1",
            "--port",
            &server.port().to_string(),
            "--tls",
            "none",
            "--auth",
            "none",
            "--from",
            "a@example.com",
            "--to",
            "b@example.com",
        ],
        &[
            ("POSTERN_EHLO_NAME", "client.example.com"),
            ("POSTERN_FROM_NAME", "Billing Team"),
            ("POSTERN_REPLY_TO", "help@example.com"),
        ],
    );
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert!(
        server
            .transcript()
            .iter()
            .any(|l| l == "C: EHLO client.example.com")
    );
    let data = String::from_utf8(server.messages()[0].data.clone().unwrap()).unwrap();
    assert!(
        data.contains("From: \"Billing Team\" <a@example.com>"),
        "{data}"
    );
    assert!(data.contains("Reply-To: <help@example.com>"), "{data}");

    // POSTERN_DANGEROUS_ACCEPT_INVALID_CERTS: an untrusted certificate passes.
    let p = peers("env-certs", None, &[]);
    let o = p.send_password("alice-pw", &["--to", "rcpt@example.com"]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let port = p.port();
    let args = [
        "send",
        "--host",
        "localhost",
        "--port",
        &port,
        "--user",
        "alice",
        "--password-env",
        "PW",
        "--from",
        "a@example.com",
        "--to",
        "rcpt@example.com",
    ];
    assert_eq!(
        code(&postern(&args, &[("PW", "alice-pw")])),
        3,
        "untrusted without the switch"
    );
    let o = postern(
        &args,
        &[
            ("PW", "alice-pw"),
            ("POSTERN_DANGEROUS_ACCEPT_INVALID_CERTS", "true"),
        ],
    );
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));

    // Microsoft's submission server when no host is given.
    let o = postern(
        &[
            "diagnose",
            "--provider",
            "microsoft",
            "--tenant",
            "contoso.onmicrosoft.com",
            "--client-id",
            "app",
            "--client-secret-env",
            "S",
            "--user",
            "a@contoso.com",
        ],
        &[("S", "x")],
    );
    assert!(
        text(&o.stdout).contains("[ ok ] 1. configuration: smtp.office365.com,"),
        "{}",
        text(&o.stdout)
    );

    // `token` asks for no mailbox.
    let url = p.token_server.url();
    let o = postern(
        &[
            "token",
            "--provider",
            "generic",
            "--token-url",
            &url,
            "--allow-http-token-url",
            "--client-id",
            "app",
            "--client-secret-env",
            "S",
        ],
        &[("S", "app~secret")],
    );
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));

    // Credentials without TLS: to a loopback proxy only.
    let plain = SmtpServer::start(SmtpServerConfig {
        users: vec![("alice".into(), "pw".into())],
        auth_without_tls: true,
        require_auth: true,
        ..Default::default()
    })
    .unwrap();
    let port = plain.port().to_string();
    let creds = |host: &str| {
        postern(
            &[
                "send",
                "--host",
                host,
                "--port",
                &port,
                "--tls",
                "none",
                "--user",
                "alice",
                "--password-env",
                "PW",
                "--dangerous-allow-credentials-without-tls",
                "--from",
                "a@example.com",
                "--to",
                "b@example.com",
            ],
            &[("PW", "pw")],
        )
    };
    let o = creds("127.0.0.1");
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert_eq!(plain.messages().len(), 1);
    let o = creds("mail.example.com");
    assert_eq!(code(&o), 2);
    assert!(
        text(&o.stderr).contains("only for a loopback address"),
        "{}",
        text(&o.stderr)
    );
}

/// The wrong TLS mode for the port: each direction names the other mode.
#[test]
fn tls_mode_mismatch_names_the_other_mode() {
    let p = peers("tls-mismatch", None, &[]);
    // Implicit TLS against the STARTTLS port.
    let o = p.send_password(
        "alice-pw",
        &["--tls", "implicit", "--to", "rcpt@example.com"],
    );
    assert_eq!(code(&o), 3);
    assert!(
        text(&o.stderr).contains("try --tls starttls"),
        "{}",
        text(&o.stderr)
    );
    // STARTTLS against an implicit-TLS port: no greeting comes.
    let pki = Pki::generate();
    let implicit = SmtpServer::start(SmtpServerConfig {
        tls: ServerTls::Implicit(pki.localhost.server_config()),
        ..Default::default()
    })
    .unwrap();
    let o = postern(
        &[
            "send",
            "--host",
            "localhost",
            "--port",
            &implicit.port().to_string(),
            "--tls",
            "starttls",
            "--auth",
            "none",
            "--timeout",
            "1",
            "--from",
            "a@example.com",
            "--to",
            "b@example.com",
        ],
        &[],
    );
    assert_eq!(code(&o), 3);
    assert!(
        text(&o.stderr).contains("try --tls implicit"),
        "{}",
        text(&o.stderr)
    );
}

/// For Microsoft app-only, `diagnose` prints the Exchange Online steps with
/// this app's values: the ObjectId is the token's `oid` (the Enterprise
/// application's), never the App registration's.
#[test]
fn diagnose_prints_the_exchange_checklist_for_app_only() {
    use base64::Engine;
    let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let jwt = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"RS256","typ":"JWT"}"#),
        b64(
            r#"{"aud":"https://outlook.office365.com","roles":["SMTP.SendAsApp"],"appid":"6f1c2a9e-0000-4000-8000-000000000001","oid":"9d0e7b3c-0000-4000-8000-0000000000aa","tid":"11111111-2222-3333-4444-555555555555"}"#
        ),
        b64("signature")
    );
    let tokens = TokenServer::start(TokenServerConfig::default()).unwrap();
    tokens.force_response(Some((
        200,
        &format!(r#"{{"token_type":"Bearer","expires_in":3599,"access_token":"{jwt}"}}"#),
    )));
    let url = tokens.url();
    let o = postern(
        &[
            "diagnose",
            "--provider",
            "microsoft",
            "--tenant",
            "contoso.onmicrosoft.com",
            "--token-url",
            &url,
            "--allow-http-token-url",
            "--client-id",
            "app",
            "--client-secret-env",
            "S",
            "--user",
            "reports@contoso.com",
            "--host",
            "127.0.0.1",
            "--port",
            "1",
            "--timeout",
            "2",
        ],
        &[("S", "x")],
    );
    let out = text(&o.stdout);
    assert!(out.contains("[ ok ] 3. token claims"), "{out}");
    assert!(
        out.contains("New-ServicePrincipal -AppId 6f1c2a9e-0000-4000-8000-000000000001 -ObjectId 9d0e7b3c-0000-4000-8000-0000000000aa"),
        "{out}"
    );
    assert!(
        out.contains("Add-MailboxPermission -Identity reports@contoso.com -User 9d0e7b3c-0000-4000-8000-0000000000aa -AccessRights FullAccess"),
        "{out}"
    );
}

/// `send --json` names the diagnosis and the error link of a token failure
/// (AADSTS7000215), as the text does.
#[test]
fn json_output_carries_the_token_diagnosis_and_link() {
    let p = peers("json-diagnosis", None, &[]);
    let mut args = vec!["send".to_owned()];
    args.extend(p.oauth_args());
    args.extend(["--to", "rcpt@example.com", "--json"].map(str::to_owned));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = postern(&argv, &[("SECRET", "the-secret-id-not-its-value")]);
    assert_eq!(code(&o), 4);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["diagnosis"]["id"], "ms.secret.wrong", "{v}");
    assert_eq!(v["error"]["diagnosis"]["step"], "client secret", "{v}");
    assert_eq!(
        v["error"]["link"], "https://login.microsoftonline.com/error?code=7000215",
        "{v}"
    );
}
