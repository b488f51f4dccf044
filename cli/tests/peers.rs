//! The `postern` binary against the real peers (oidc-provider, Dovecot,
//! Postfix) started by `tests/peers/start.sh`: a client-credentials send,
//! the authorization code flow with PKCE through oidc-provider's consent,
//! the refresh-token grant, and the device flow. Skipped unless
//! `POSTERN_PEERS_ENV` is set.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use postern_test_support::peers::{Peers, Server};

const BIN: &str = env!("CARGO_BIN_EXE_postern");

fn base_args(p: &Peers, port: u16) -> Vec<String> {
    [
        "--host",
        "localhost",
        "--port",
        &port.to_string(),
        "--ca-file",
        p.var("CA_FILE"),
        "--provider",
        "generic",
        "--token-url",
        p.var("TOKEN_URL"),
        "--allow-http-token-url",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn run(args: &[String], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn unique(what: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("cli-{what}-{}-{n}", std::process::id())
}

#[test]
fn send_with_client_credentials_to_dovecot_and_postfix() {
    let Some(p) = Peers::get() else { return };
    for server in [Server::Dovecot, Server::Postfix] {
        let subject = unique("cc");
        let mut args = vec!["send".to_owned()];
        args.extend(base_args(&p, p.smtp_port(server, false)));
        args.extend(
            [
                "--client-id",
                "post-client",
                "--client-secret-env",
                "S",
                "--scope",
                "mail",
                "--auth",
                "xoauth2",
                "--user",
                "sender@example.com",
                "--from",
                "sender@example.com",
                "--to",
                "rcpt@example.com",
                "--subject",
                &subject,
                "--json",
            ]
            .iter()
            .map(|s| (*s).to_owned()),
        );
        let o = run(&args, &[("S", "post-secret~2")]);
        assert!(
            o.status.success(),
            "{server:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(p.wait_for_mail("rcpt", &subject, 1).len(), 1);
    }
}

/// An HTTP GET with cookies; returns (status, headers).
fn get(url: &str, jar: &mut BTreeMap<String, String>) -> (u16, Vec<(String, String)>) {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut s = TcpStream::connect(authority).unwrap();
    let cookies: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nCookie: {}\r\nConnection: close\r\n\r\n",
        cookies.join("; ")
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let mut lines = response.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            l.split_once(": ")
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        })
        .collect();
    for (k, v) in &headers {
        if k == "set-cookie" {
            let pair = v.split(';').next().unwrap();
            if let Some((name, value)) = pair.split_once('=') {
                jar.insert(name.to_owned(), value.to_owned());
            }
        }
    }
    (status, headers)
}

/// Follows redirects (resolving relative ones against `origin`) until the
/// Location starts with `prefix`.
fn follow_until(url: &str, origin: &str, prefix: &str) -> String {
    let mut jar = BTreeMap::new();
    let mut url = url.to_owned();
    for _ in 0..10 {
        let (status, headers) = get(&url, &mut jar);
        let location = headers
            .iter()
            .find(|(k, _)| k == "location")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no redirect from {url}: {status}"));
        let absolute = if location.starts_with('/') {
            format!("{origin}{location}")
        } else {
            location
        };
        if absolute.starts_with(prefix) {
            return absolute;
        }
        url = absolute;
    }
    panic!("too many redirects");
}

fn spawn(args: &[String]) -> std::process::Child {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn authorization_code_with_pkce_then_refresh_token_send() {
    let Some(p) = Peers::get() else { return };
    let dir = std::env::temp_dir().join(unique("authz"));
    std::fs::create_dir_all(&dir).unwrap();
    let store = dir.join("refresh");
    let issuer = p.var("ISSUER").to_owned();
    let mut args = vec!["authorize".to_owned()];
    args.extend(base_args(&p, 1));
    args.extend(
        [
            "--authorize-url",
            &format!("{issuer}/auth"),
            "--client-id",
            "public-client",
            "--scope",
            "openid offline_access mail",
            "--user",
            "user@example.com",
            "--refresh-token-file",
            store.to_str().unwrap(),
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    let mut child = spawn(&args);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("http://"))
        .unwrap();
    std::thread::spawn(move || for _ in lines {});
    let redirect_uri = url
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("redirect_uri="))
        .unwrap()
        .replace("%3A", ":")
        .replace("%2F", "/");
    assert!(
        redirect_uri.starts_with("http://127.0.0.1:"),
        "{redirect_uri}"
    );
    let redirect = follow_until(&url, &issuer, &redirect_uri);
    assert!(redirect.contains("code="), "{redirect}");
    let mut jar = BTreeMap::new();
    let _ = get(&redirect, &mut jar);
    let status = child.wait().unwrap();
    assert!(status.success());
    let refresh = std::fs::read_to_string(&store).unwrap();
    assert!(refresh.trim().len() > 20);

    // Delegated commands as user@example.com with the stored refresh token.
    let delegated = |command: &str, extra: &[&str]| {
        let mut args = vec![command.to_owned()];
        args.extend(base_args(&p, p.smtp_port(Server::Dovecot, true)));
        args.extend(
            [
                "--tls",
                "implicit",
                "--client-id",
                "public-client",
                "--refresh-token-file",
                store.to_str().unwrap(),
                "--user",
                "user@example.com",
                "--from",
                "user@example.com",
            ]
            .iter()
            .chain(extra)
            .map(|s| (*s).to_owned()),
        );
        let o = run(&args, &[]);
        assert!(
            o.status.success(),
            "{command}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // The refresh-token grant drives a delegated send as user@example.com.
    let subject = unique("delegated");
    delegated("send", &["--to", "rcpt@example.com", "--subject", &subject]);
    assert_eq!(p.wait_for_mail("rcpt", &subject, 1).len(), 1);
    // Public clients get a rotated refresh token: the file was replaced.
    let rotated = std::fs::read_to_string(&store).unwrap();
    assert_ne!(rotated, refresh, "rotated refresh token stored");

    // The guides' "Send Test Email" right after authorizing, then `token`,
    // then ordinary sends: each redeems the stored refresh token, which
    // oidc-provider rotates, so each must store the new one before going on.
    let before = std::fs::read_to_string(&store).unwrap();
    let out = delegated("diagnose", &["--send-test", "rcpt@example.com"]);
    assert!(out.contains("all steps passed"), "{out}");
    let after = std::fs::read_to_string(&store).unwrap();
    assert_ne!(after, before, "diagnose stored the rotated refresh token");
    delegated("token", &[]);
    assert_ne!(std::fs::read_to_string(&store).unwrap(), after, "token too");
    for n in 0..2 {
        let subject = unique(&format!("after-diagnose-{n}"));
        delegated("send", &["--to", "rcpt@example.com", "--subject", &subject]);
        assert_eq!(p.wait_for_mail("rcpt", &subject, 1).len(), 1);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn device_flow() {
    let Some(p) = Peers::get() else { return };
    let dir = std::env::temp_dir().join(unique("device"));
    std::fs::create_dir_all(&dir).unwrap();
    let store = dir.join("refresh");
    let issuer = p.var("ISSUER").to_owned();
    let mut args = vec!["authorize".to_owned()];
    args.extend(base_args(&p, 1));
    args.extend(
        [
            "--device",
            "--device-url",
            &format!("{issuer}/device/auth"),
            "--client-id",
            "public-client",
            "--scope",
            "openid offline_access mail",
            "--refresh-token-file",
            store.to_str().unwrap(),
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    let mut child = spawn(&args);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("enter the code"))
        .unwrap();
    std::thread::spawn(move || for _ in lines {});
    let code = line.rsplit(' ').next().unwrap().to_owned();
    let mut jar = BTreeMap::new();
    let (status, _) = get(&format!("{issuer}/approve-device/{code}"), &mut jar);
    assert_eq!(status, 200);
    assert!(child.wait().unwrap().success());
    assert!(std::fs::read_to_string(&store).unwrap().trim().len() > 20);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// International mail through Postfix (which offers SMTPUTF8 and 8BITMIME):
/// a message the CLI builds for a UTF-8 address, and an 8-bit raw file,
/// both land in the Maildir as sent.
#[test]
fn international_recipient_and_eight_bit_file_through_postfix() {
    let Some(p) = Peers::get() else { return };
    let auth = [
        "--client-id",
        "post-client",
        "--client-secret-env",
        "S",
        "--scope",
        "mail",
        "--auth",
        "xoauth2",
        "--user",
        "sender@example.com",
        "--from",
        "sender@example.com",
    ];
    let subject = unique("utf8");
    let mut args = vec!["send".to_owned()];
    args.extend(base_args(&p, p.smtp_port(Server::Postfix, false)));
    args.extend(auth.iter().map(|s| (*s).to_owned()));
    args.extend(
        [
            "--to",
            "j\u{f6}ran@example.com",
            "--subject",
            &subject,
            "--body",
            "hello",
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    let o = run(&args, &[("S", "post-secret~2")]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let got = p.wait_for_mail("joeran", &subject, 1);
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("To: j\u{f6}ran@example.com"), "{}", got[0]);

    let tag = unique("8bit");
    let dir = std::env::temp_dir().join(&tag);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("m.eml");
    let body = format!(
        "From: <sender@example.com>\r\nTo: <rcpt@example.com>\r\nSubject: {tag}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nD\u{e9}j\u{e0} vu, na\u{ef}ve caf\u{e9}.\r\n"
    );
    std::fs::write(&file, &body).unwrap();
    let mut args = vec!["send".to_owned()];
    args.extend(base_args(&p, p.smtp_port(Server::Postfix, false)));
    args.extend(auth.iter().map(|s| (*s).to_owned()));
    args.extend(
        [
            "--to",
            "rcpt@example.com",
            "--raw-file",
            file.to_str().unwrap(),
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    let o = run(&args, &[("S", "post-secret~2")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = p.wait_for_mail("rcpt", &tag, 1);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].contains("D\u{e9}j\u{e0} vu, na\u{ef}ve caf\u{e9}."),
        "{}",
        got[0]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `postern send` run three times, one process after the other, sharing a
/// file store sealed with a key: one refresh-token redemption serves all
/// three (short-public's tokens live 4 s), the rotated refresh token is in
/// the store and in the file, and the store holds no token in clear.
#[test]
fn sequential_processes_share_a_sealed_file_store() {
    let Some(p) = Peers::get() else { return };
    let (refresh, grant) = p.mint_refresh_token("short-public", "sender@example.com");
    let dir = std::env::temp_dir().join(unique("shared"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("refresh");
    std::fs::write(&file, &refresh).unwrap();
    let store = dir.join("store");
    let key = "q2dkPZ6MmE4Ux0N8HbnL0Nf0Gq6b7tqyy0BTRs1u3m8=";
    let subject = unique("shared");
    let started = std::time::Instant::now();
    for n in 0..3 {
        let mut args = vec!["send".to_owned()];
        args.extend(base_args(&p, p.smtp_port(Server::Dovecot, true)));
        args.extend(
            [
                "--tls",
                "implicit",
                "--client-id",
                "short-public",
                "--scope",
                "openid offline_access mail",
                "--refresh-token-file",
                file.to_str().unwrap(),
                "--user",
                "sender@example.com",
                "--from",
                "sender@example.com",
                "--to",
                "rcpt@example.com",
                "--subject",
                &format!("{subject}-{n}"),
                "--token-store",
                &format!("file:{}", store.display()),
                "--limits",
                "microsoft365",
            ]
            .iter()
            .map(|s| (*s).to_owned()),
        );
        let o = run(&args, &[("POSTERN_STORE_KEY", key)]);
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let elapsed = started.elapsed();
    assert_eq!(p.wait_for_mail("rcpt", &subject, 3).len(), 3);
    let stats = p.grant_stats(&grant);
    let redeemed = stats["success:refresh_token"];
    // One redemption for the three processes while the first token lives
    // (refreshed 2 s after it was issued).
    let bound = 1 + elapsed.as_secs() / 2;
    assert!(
        redeemed <= bound,
        "{redeemed} redemptions in {elapsed:?}: {stats:?}"
    );
    assert!(!stats.keys().any(|k| k.starts_with("error")), "{stats:?}");
    // The store: sealed records, nothing in clear, mode 0600.
    let mut sealed = 0;
    for e in std::fs::read_dir(&store).unwrap().flatten() {
        let bytes = std::fs::read(e.path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(&refresh),
            "the refresh token in clear in {}",
            e.path().display()
        );
        if bytes.starts_with(b"postern-sealed-v1:") {
            sealed += 1;
        }
    }
    assert_eq!(sealed, 1, "one sealed token record");
    // The rotated refresh token reached the file too.
    assert_ne!(std::fs::read_to_string(&file).unwrap().trim(), refresh);
    // A wrong key is refused with a clear error, naming the variable.
    let mut args = vec!["token".to_owned()];
    args.extend(base_args(&p, p.smtp_port(Server::Dovecot, true)));
    args.extend(
        [
            "--client-id",
            "short-public",
            "--refresh-token-file",
            file.to_str().unwrap(),
            "--user",
            "sender@example.com",
            "--token-store",
            &format!("file:{}", store.display()),
            "--store-key-env",
            "MY_KEY",
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    let o = run(&args, &[("MY_KEY", "not a key")]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("MY_KEY") && err.contains("32 bytes"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
