//! `postern proxy` between real legacy clients (swaks, msmtp, Python's
//! smtplib) and the real peers of `tests/peers`: Dovecot submission and
//! Postfix, both taking XOAUTH2 with oidc-provider's client-credentials
//! tokens. What lands in the Maildir is compared with what was sent.
//! Skipped unless `POSTERN_PEERS_ENV` is set (CI sets it).
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use postern_test_support::peers::{Peers, Server};

const BIN: &str = env!("CARGO_BIN_EXE_postern");
const USER: &str = "sender@example.com";
const PASSWORD: &str = "local-password-1";

fn unique(what: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("proxy-{what}-{}-{n}", std::process::id())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `postern proxy` with a Dovecot listener and a Postfix one.
struct Running {
    child: Child,
    dovecot: u16,
    postfix: u16,
    dir: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hash(password: &str) -> String {
    let mut child = Command::new(BIN)
        .args(["proxy", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn config(p: &Peers, dovecot: u16, postfix: u16, secret_env: &str) -> String {
    let upstream = |port: u16| {
        format!(
            "{{ host = \"localhost\", port = {port}, tls = \"starttls\", ca_file = \"{}\" }}",
            p.var("CA_FILE")
        )
    };
    format!(
        r#"[proxy]
hostname = "proxy.test"
max_message_size = 104857600

[[listener]]
listen = "127.0.0.1:{dovecot}"
upstream = {}

[[listener]]
listen = "127.0.0.1:{postfix}"
upstream = {}

[[account]]
name = "{USER}"
password_hash = "{}"
aliases = ["noreply@example.com"]
upstream = {{ provider = "generic", token_url = "{}", allow_http_token_url = true, client_id = "post-client", client_secret_env = "{secret_env}", scope = "mail", auth = "xoauth2" }}
"#,
        upstream(p.smtp_port(Server::Dovecot, false)),
        upstream(p.smtp_port(Server::Postfix, false)),
        hash(PASSWORD),
        p.var("TOKEN_URL"),
    )
}

fn start(p: &Peers, name: &str) -> Running {
    start_on(p, name, free_port())
}

/// [`start`] with the Dovecot listener on `dovecot`.
fn start_on(p: &Peers, name: &str, dovecot: u16) -> Running {
    let dir = std::env::temp_dir().join(format!("postern-proxy-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let postfix = free_port();
    std::fs::write(dir.join("proxy.toml"), config(p, dovecot, postfix, "S")).unwrap();
    let child = launch(
        &dir,
        "--config",
        "proxy.toml",
        &[("S", "post-secret~2")],
        postfix,
    );
    Running {
        child,
        dovecot,
        postfix,
        dir,
    }
}

/// Starts `postern proxy OPTION DIR/FILE` with only `env`, its log in
/// `DIR/proxy.log`, and waits until `port` accepts (failing with the log
/// if the proxy exits first).
fn launch(dir: &Path, option: &str, file: &str, env: &[(&str, &str)], port: u16) -> Child {
    let mut child = Command::new(BIN)
        .args(["proxy", option])
        .arg(dir.join(file))
        .env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("proxy.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the proxy exited ({status}): {}",
                std::fs::read_to_string(dir.join("proxy.log")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "the proxy did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn swaks(port: u16, args: &[&str]) -> Output {
    Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}"), "--timeout", "30"])
        .args(args)
        .output()
        .expect("swaks is installed by tests/peers/install.sh")
}

/// swaks logging in as [`USER`] with `mechanism`, sending from [`USER`] to
/// `to` with `subject`.
fn swaks_login(port: u16, mechanism: &str, to: &str, subject: &str) -> Output {
    swaks(
        port,
        &[
            "--from",
            USER,
            "--to",
            to,
            "--auth",
            mechanism,
            "--auth-user",
            USER,
            "--auth-password",
            PASSWORD,
            "--header",
            &format!("Subject: {subject}"),
        ],
    )
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The body of a stored message: what follows its header section.
fn stored_body(message: &str) -> &str {
    message.split_once("\n\n").map_or("", |(_, b)| b)
}

#[test]
fn legacy_clients_through_the_proxy() {
    let Some(p) = Peers::get() else { return };
    let proxy = start(&p, "clients");
    // swaks, without and with pipelining, PLAIN and LOGIN.
    for (i, extra) in [
        &["--auth", "PLAIN"][..],
        &["--auth", "LOGIN", "--pipeline"][..],
    ]
    .iter()
    .enumerate()
    {
        let subject = unique(&format!("swaks{i}"));
        let body = format!("first line\n.leading dot\nlast line {i}");
        let o = swaks(
            proxy.dovecot,
            &[
                extra,
                &[
                    "--auth-user",
                    USER,
                    "--auth-password",
                    PASSWORD,
                    "--from",
                    USER,
                    "--to",
                    "rcpt@example.com",
                    "--header",
                    &format!("Subject: {subject}"),
                    "--body",
                    &body,
                ][..],
            ]
            .concat(),
        );
        assert!(o.status.success(), "swaks {extra:?}: {}", text(&o));
        let stored = p.wait_for_mail("rcpt", &subject, 1);
        assert_eq!(
            stored_body(&stored[0]).replace("\r\n", "\n").trim_end(),
            body,
            "what lands equals what was sent"
        );
    }
    // msmtp.
    let subject = unique("msmtp");
    let mut child = Command::new("msmtp")
        .args([
            "--host=127.0.0.1",
            &format!("--port={}", proxy.dovecot),
            "--auth=plain",
            &format!("--user={USER}"),
            &format!("--passwordeval=echo {PASSWORD}"),
            "--tls=off",
            &format!("--from={USER}"),
            "rcpt@example.com",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("msmtp is installed by tests/peers/install.sh");
    let message = format!("From: {USER}\r\nSubject: {subject}\r\n\r\nvia msmtp\r\n..two dots\r\n");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(message.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "msmtp: {}", text(&o));
    let stored = p.wait_for_mail("rcpt", &subject, 1);
    assert_eq!(
        stored_body(&stored[0]).replace("\r\n", "\n"),
        "via msmtp\n..two dots\n"
    );
    // Python's smtplib: 8-bit text through Dovecot, SMTPUTF8 (a UTF-8
    // subject and sender name) through Postfix, which offers it.
    for (port, utf8) in [(proxy.dovecot, false), (proxy.postfix, true)] {
        let subject = unique(if utf8 { "py-utf8" } else { "py-8bit" });
        let script = format!(
            r#"
import smtplib
from email.message import EmailMessage
m = EmailMessage()
m["From"] = "Jürgen <{USER}>"
m["To"] = "rcpt@example.com"
m["Subject"] = "{subject} Grüße"
m.set_content("8-bit: Grüße, ünïcödé — ok\n.\nafter a lone dot\n", cte="8bit")
with smtplib.SMTP("127.0.0.1", {port}) as s:
    s.login("{USER}", "{PASSWORD}")
    s.send_message(m, mail_options={options})
"#,
            options = if utf8 { "[\"SMTPUTF8\"]" } else { "[]" },
        );
        let o = Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(o.status.success(), "smtplib utf8={utf8}: {}", text(&o));
        let stored = p.wait_for_mail("rcpt", &subject, 1);
        assert!(
            stored_body(&stored[0]).contains("8-bit: Grüße, ünïcödé — ok\n.\nafter a lone dot\n"),
            "{}",
            stored[0]
        );
        if utf8 {
            assert!(
                stored[0].contains("Grüße"),
                "raw UTF-8 subject: {}",
                stored[0]
            );
        }
    }
    let log = std::fs::read_to_string(proxy.dir.join("proxy.log")).unwrap();
    assert!(log.contains("relayed"), "a log line per transaction: {log}");
    assert!(
        !log.contains(PASSWORD) && !log.contains("post-secret"),
        "no secret in the log"
    );
}

#[test]
fn local_refusals_and_upstream_verdicts() {
    let Some(p) = Peers::get() else { return };
    let proxy = start(&p, "refusals");
    let common = [
        "--from",
        USER,
        "--to",
        "rcpt@example.com",
        "--auth",
        "PLAIN",
        "--auth-user",
        USER,
    ];
    let o = swaks(
        proxy.dovecot,
        &[&common[..], &["--auth-password", "wrong-password"]].concat(),
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("535 5.7.8"), "{}", text(&o));
    let o = swaks(proxy.dovecot, &["--from", USER, "--to", "rcpt@example.com"]);
    assert!(text(&o).contains("530 5.7.0"), "no AUTH: {}", text(&o));
    let o = swaks(
        proxy.dovecot,
        &[
            "--from",
            "ceo@example.com",
            "--to",
            "rcpt@example.com",
            "--auth",
            "PLAIN",
            "--auth-user",
            USER,
            "--auth-password",
            PASSWORD,
        ],
    );
    assert!(
        text(&o).contains("550 5.7.1"),
        "another sender: {}",
        text(&o)
    );
    // Upstream refuses one of two recipients: the client sees exactly that,
    // and the other gets the message.
    let subject = unique("partial");
    let o = swaks_login(
        proxy.dovecot,
        "PLAIN",
        "rcpt@example.com,nobody@elsewhere.invalid",
        &subject,
    );
    let out = text(&o);
    assert!(
        out.contains("<** 450 4.1.1") || out.contains("<** 550") || out.contains("<** 554 5.7.1"),
        "{out}"
    );
    assert!(out.contains("<-  250 2.0.0"), "{out}");
    assert_eq!(p.wait_for_mail("rcpt", &subject, 1).len(), 1);
}

#[test]
fn check_names_the_failing_step() {
    let Some(p) = Peers::get() else { return };
    let dir = std::env::temp_dir().join(format!("postern-proxy-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("proxy.toml");
    std::fs::write(&file, config(&p, free_port(), free_port(), "S")).unwrap();
    let run = |secret: &str| {
        Command::new(BIN)
            .args(["proxy", "--check", "--config"])
            .arg(&file)
            .env_clear()
            .env("S", secret)
            .output()
            .unwrap()
    };
    let o = run("post-secret~2");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        text(&o).matches("ok   sender@example.com").count(),
        2,
        "{}",
        text(&o)
    );
    let o = run("wrong-secret");
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("token"), "{}", text(&o));
}

/// The admin guide's own email-oauth2-proxy file (shared/seeds, the vault's
/// guide), with its endpoints pointed at the peers and a local password
/// hash added: it imports with a report (the markdown-link token URL and
/// the IMAP section among the findings) and the proxy relays a message.
#[test]
fn the_guides_emailproxy_file_imports_and_relays() {
    let Some(p) = Peers::get() else { return };
    let dir = std::env::temp_dir().join(format!("postern-proxy-ini-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let token_url = p.var("TOKEN_URL");
    let ini = format!(
        "[emailproxy]
delete_account_token_on_password_error = True
encrypt_client_secret_on_first_use = False
allow_catch_all_accounts = True
[IMAP-2993]
server_address = outlook.office365.com
server_port = 993
[SMTP-{port}]
server_address = localhost
server_port = {}
starttls = True
postern_ca_file = {}
[@]
redirect_uri = http://<Your_Vault_Address>/email-oauth2-proxy-authorize/
redirect_list_address = http://127.0.0.1:8801/
token_url = [{token_url}]({token_url}%22%5C)
permission_url = {token_url}
oauth2_scope = \" mail \"
client_id = post-client
client_secret = post-secret~2
oauth2_flow = client_credentials
postern_password_hash = {}
",
        p.smtp_port(Server::Dovecot, false),
        p.var("CA_FILE"),
        hash(PASSWORD),
    );
    std::fs::write(dir.join("emailproxy.config"), ini).unwrap();
    let mut child = launch(&dir, "--emailproxy-config", "emailproxy.config", &[], port);
    let subject = unique("ini");
    let o = swaks_login(port, "LOGIN", "rcpt@example.com", &subject);
    let _ = child.kill();
    let _ = child.wait();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(p.wait_for_mail("rcpt", &subject, 1).len(), 1);
    let report = std::fs::read_to_string(dir.join("proxy.log")).unwrap();
    assert!(
        report.contains("fixed:") && report.contains("markdown link"),
        "{report}"
    );
    assert!(
        report.contains("[IMAP-2993] (line 5): postern proxy relays SMTP only"),
        "{report}"
    );
    assert!(
        !report.contains("post-secret"),
        "the client secret never shows: {report}"
    );
}

/// The proxy's peak resident memory (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A 64 MiB message streams through: the proxy's peak memory grows by far
/// less than the message, and the message arrives whole.
#[test]
fn a_64_mib_message_streams_through_in_flat_memory() {
    let Some(p) = Peers::get() else { return };
    let proxy = start(&p, "large");
    let send = |subject: &str, lines: usize| {
        let script = format!(
            r#"
import smtplib
line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n"
body = b"From: {USER}\r\nSubject: {subject}\r\n\r\n" + line * {lines}
with smtplib.SMTP("127.0.0.1", {port}) as s:
    s.login("{USER}", "{PASSWORD}")
    s.sendmail("{USER}", ["rcpt@example.com"], body)
"#,
            port = proxy.dovecot,
        );
        let o = Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    };
    let warm = unique("warm");
    send(&warm, 10);
    assert_eq!(p.wait_for_mail("rcpt", &warm, 1).len(), 1);
    let before = peak_rss_kib(proxy.child.id());
    let subject = unique("64mib");
    let lines = 64 * 1024 * 1024 / 74;
    send(&subject, lines);
    let after = peak_rss_kib(proxy.child.id());
    let stored = p.wait_for_mail("rcpt", &subject, 1);
    assert!(
        stored[0].len() >= lines * 73,
        "the whole message arrived: {} bytes",
        stored[0].len()
    );
    eprintln!("proxy peak RSS: {before} KiB before, {after} KiB after a 64 MiB message");
    assert!(
        after < before + 16 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB for a 64 MiB message"
    );
}

/// Past `max_sessions`, a connection gets `421 4.3.2` and is closed; a
/// session that ends frees its place.
#[test]
fn the_session_limit_refuses_with_421() {
    use std::io::{BufRead, BufReader};
    let Some(p) = Peers::get() else { return };
    let dir = std::env::temp_dir().join(format!("postern-proxy-limit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (dovecot, postfix) = (free_port(), free_port());
    let text =
        config(&p, dovecot, postfix, "S").replace("[proxy]\n", "[proxy]\nmax_sessions = 1\n");
    std::fs::write(dir.join("proxy.toml"), text).unwrap();
    let mut child = Command::new(BIN)
        .args(["proxy", "--config"])
        .arg(dir.join("proxy.toml"))
        .env_clear()
        .env("S", "post-secret~2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let greeting = |stream: &TcpStream| {
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        line
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", dovecot)) {
            break s;
        }
        assert!(Instant::now() < deadline, "the proxy did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(greeting(&first).starts_with("220"));
    let second = TcpStream::connect(("127.0.0.1", postfix)).unwrap();
    let refused = greeting(&second);
    drop(first);
    std::thread::sleep(Duration::from_millis(200));
    let third = TcpStream::connect(("127.0.0.1", dovecot)).unwrap();
    let again = greeting(&third);
    let _ = child.kill();
    let _ = child.wait();
    assert!(refused.starts_with("421 4.3.2"), "{refused}");
    assert!(again.starts_with("220"), "{again}");
}

/// Postfix as the appliance's MTA: a second Postfix instance of the peers
/// relays through the proxy (`relayhost` is the proxy, SASL PLAIN with the
/// local password), and the message reaches the Maildir through Dovecot.
#[test]
fn postfix_relays_through_the_proxy() {
    let Some(p) = Peers::get() else { return };
    let port: u16 = p.var("RELAY_PROXY_PORT").parse().unwrap();
    let proxy = start_on(&p, "postfix-relay", port);
    assert_eq!(proxy.dovecot, port);
    let subject = unique("postfix-relay");
    let o = swaks(
        p.var("RELAY_SUBMIT_PORT").parse().unwrap(),
        &[
            "--from",
            USER,
            "--to",
            "rcpt@example.com",
            "--header",
            &format!("Subject: {subject}"),
            "--body",
            "relayed by Postfix",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let stored = p.wait_for_mail("rcpt", &subject, 1);
    assert!(stored[0].contains("relayed by Postfix"));
    assert!(
        stored[0].contains("relay.postern.test"),
        "it went through the relay instance: {}",
        stored[0]
    );
}

/// SIGTERM: the proxy stops accepting at once, lets the transaction in
/// flight finish (its message is delivered), then exits cleanly.
#[test]
fn sigterm_finishes_the_transaction_in_flight() {
    use base64::Engine;
    use std::io::{BufRead, BufReader};
    let Some(p) = Peers::get() else { return };
    let mut proxy = start(&p, "shutdown");
    let stream = TcpStream::connect(("127.0.0.1", proxy.dovecot)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let reply = |reader: &mut BufReader<TcpStream>| {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    };
    assert!(reply(&mut reader).starts_with("220"));
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0{PASSWORD}"));
    let subject = unique("sigterm");
    for (line, code) in [
        ("EHLO legacy.test".to_owned(), "250"),
        (format!("AUTH PLAIN {plain}"), "235"),
        (format!("MAIL FROM:<{USER}>"), "250"),
        ("RCPT TO:<rcpt@example.com>".to_owned(), "250"),
        ("DATA".to_owned(), "354"),
    ] {
        writer.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        let r = reply(&mut reader);
        assert!(r.starts_with(code), "{line}: {r}");
    }
    writer
        .write_all(format!("Subject: {subject}\r\n\r\nhalf of it\r\n").as_bytes())
        .unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &proxy.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        TcpStream::connect(("127.0.0.1", proxy.dovecot)).is_err(),
        "no new sessions after SIGTERM"
    );
    writer.write_all(b"the rest\r\n.\r\n").unwrap();
    let done = reply(&mut reader);
    assert!(done.starts_with("250"), "{done}");
    writer.write_all(b"QUIT\r\n").unwrap();
    assert!(reply(&mut reader).starts_with("221"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the proxy did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit}");
    let stored = p.wait_for_mail("rcpt", &subject, 1);
    assert!(stored[0].contains("half of it") && stored[0].contains("the rest"));
}

/// A catch-all account cannot share one user's refresh token: each mailbox
/// would redeem and rotate it, and all but one would lose it. Refused at
/// start, before anything listens.
#[test]
fn a_catch_all_account_with_a_refresh_token_is_refused() {
    let dir = std::env::temp_dir().join(format!("postern-proxy-rt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    std::fs::write(
        dir.join("proxy.toml"),
        format!(
            r#"[[listener]]
listen = "127.0.0.1:{port}"
upstream = {{ host = "localhost", port = 587 }}

[[account]]
name = "@example.com"
password_hash = "{}"
upstream = {{ provider = "microsoft", tenant = "contoso", client_id = "app", refresh_token_file = "{}" }}
"#,
            hash(PASSWORD),
            dir.join("refresh-token").display()
        ),
    )
    .unwrap();
    let o = Command::new(BIN)
        .args(["proxy", "--config"])
        .arg(dir.join("proxy.toml"))
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("cannot use one user's refresh_token_file"),
        "{}",
        text(&o)
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens"
    );
}

/// Two proxy instances sharing one Redis token store and one mailbox: a
/// rotating refresh token (short-public, 4 s tokens) is redeemed about once
/// per refresh for both, never twice (oidc-provider would revoke the
/// grant), and at most one upstream connection is open for the mailbox
/// (`max_mailbox_connections = 1`) as the shared slot is handed over.
#[test]
fn two_proxies_share_one_redis_store() {
    let Some(p) = Peers::get() else { return };
    let Some(redis) = postern_test_support::redis::RedisServer::start() else {
        return;
    };
    let (refresh, grant) = p.mint_refresh_token("short-public", "sender@example.com");
    let dir = std::env::temp_dir().join(unique("two-proxies"));
    std::fs::create_dir_all(&dir).unwrap();
    let refresh_file = dir.join("refresh");
    std::fs::write(&refresh_file, &refresh).unwrap();
    let instance = |n: usize| {
        let port = free_port();
        let sub = dir.join(format!("p{n}"));
        std::fs::create_dir_all(&sub).unwrap();
        let config = format!(
            r#"[[listener]]
listen = "127.0.0.1:{port}"
upstream = {{ host = "localhost", port = {}, tls = "implicit", ca_file = "{}" }}

[[account]]
name = "{USER}"
password_hash = "{}"
upstream = {{ provider = "generic", token_url = "{}", allow_http_token_url = true, client_id = "short-public", scope = "openid offline_access mail", refresh_token_file = "{}", auth = "xoauth2", token_store = "{}", max_mailbox_connections = 1 }}
"#,
            p.smtp_port(Server::Dovecot, true),
            p.var("CA_FILE"),
            hash(PASSWORD),
            p.var("TOKEN_URL"),
            refresh_file.display(),
            redis.url(),
        );
        std::fs::write(sub.join("proxy.toml"), config).unwrap();
        let child = launch(
            &sub,
            "--config",
            "proxy.toml",
            &[(
                "POSTERN_STORE_KEY",
                "q2dkPZ6MmE4Ux0N8HbnL0Nf0Gq6b7tqyy0BTRs1u3m8=",
            )],
            port,
        );
        (child, port)
    };
    let (mut a, port_a) = instance(0);
    let (mut b, port_b) = instance(1);
    let subject = unique("shared-proxies");
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(7) {
        let port = if sent % 2 == 0 { port_a } else { port_b };
        let o = swaks_login(
            port,
            "PLAIN",
            "rcpt@example.com",
            &format!("{subject}-{sent}"),
        );
        assert!(o.status.success(), "{}", text(&o));
        sent += 1;
    }
    let elapsed = started.elapsed();
    assert_eq!(p.wait_for_mail("rcpt", &subject, sent).len(), sent);
    let stats = p.grant_stats(&grant);
    let redeemed = stats["success:refresh_token"];
    let bound = 2 + elapsed.as_secs() / 2;
    eprintln!(
        "two proxies: {sent} messages in {elapsed:?}, {redeemed} refresh-token redemptions \
         (two unshared proxies would make about {})",
        2 * (1 + elapsed.as_secs() / 2)
    );
    assert!(
        redeemed <= bound,
        "{redeemed} redemptions in {elapsed:?}: {stats:?}"
    );
    assert!(
        stats.keys().all(|k| !k.starts_with("error")),
        "a refresh token was redeemed twice: {stats:?}"
    );
    let _ = a.kill();
    let _ = b.kill();
    let _ = a.wait();
    let _ = b.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
