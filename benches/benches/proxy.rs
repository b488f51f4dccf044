//! The submission proxy: 1 KiB messages from 10 concurrent Python smtplib
//! clients (`benches/proxy/clients.py`) with persistent sessions and with
//! a session per message, sent directly to the real Dovecot submission
//! server of `tests/peers` (STARTTLS, PLAIN), through `postern proxy` and
//! through email-oauth2-proxy (both plaintext on loopback, XOAUTH2 with
//! oidc-provider's client-credentials tokens upstream). Needs the running
//! peers (`POSTERN_PEERS_ENV`) and email-oauth2-proxy
//! (`POSTERN_EMAILPROXY`, the `emailproxy` command); `scripts/bench.sh`
//! sets both up. Without them the group is skipped.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use postern_proxy::{Account, NoTls, Proxy, ProxySettings, Upstream, hash_password};
use postern_test_support::peers::{Peers, Server};
use postern_tokio::smtp::ServerConfig;
use postern_tokio::{PoolConfig, Tokio};

const CLIENTS: usize = 10;

/// Messages a persistent-session sample sends at least (20 per client), so
/// that the one login per session is amortised as it is in real use; the
/// time reported for criterion's iteration count is scaled from it.
const PERSISTENT_BATCH: u64 = 200;
const SENDER: &str = "sender@example.com";
const LOCAL_PASSWORD: &str = "local-password-1";

/// A contender: where the clients connect and how they log in.
struct Target {
    name: &'static str,
    port: u16,
    user: String,
    password: String,
    ca: Option<String>,
}

fn clients(t: &Target, mode: &str, messages: u64) -> Duration {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/proxy/clients.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).args([
        "127.0.0.1",
        &t.port.to_string(),
        &t.user,
        &t.password,
        mode,
        &CLIENTS.to_string(),
        &messages.max(1).to_string(),
    ]);
    if let Some(ca) = &t.ca {
        cmd.arg(ca);
    }
    let out = cmd.output().expect("python3");
    assert!(
        out.status.success(),
        "{} {mode}: {}",
        t.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let seconds: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("seconds");
    Duration::from_secs_f64(seconds)
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `postern proxy`, in process, on its own runtime.
fn postern_proxy(p: &Peers) -> u16 {
    let port = free_port();
    let peers = p.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let transport = peers
                .builder::<Tokio>(Server::Dovecot, false, "localhost")
                .oauth2(peers.oauth("post-client", "post-secret~2", false))
                .pool(PoolConfig::default().max_connections(3))
                .build()
                .expect("transport");
            let account = Account::new(
                SENDER,
                hash_password(LOCAL_PASSWORD).expect("hash"),
                Upstream::One(transport),
            );
            let proxy = Proxy::new(Tokio, vec![account], ProxySettings::default()).expect("proxy");
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .expect("bind");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let proxy = proxy.clone();
                tokio::spawn(async move {
                    use tokio_util::compat::TokioAsyncReadCompatExt;
                    let config = ServerConfig::default().plaintext_auth(true);
                    proxy.serve(stream.compat(), config, None::<&NoTls>).await;
                });
            }
        });
    });
    wait_for_port(port);
    port
}

/// email-oauth2-proxy with the same upstream and the same client.
struct EmailProxy {
    child: Child,
    port: u16,
}

impl Drop for EmailProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn email_proxy(p: &Peers, command: &str) -> EmailProxy {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("postern-bench-emailproxy-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let config = dir.join("emailproxy.config");
    std::fs::write(
        &config,
        format!(
            "[SMTP-{port}]\nlocal_address = 127.0.0.1\nserver_address = localhost\nserver_port = {}\nserver_starttls = True\n\n\
             [{SENDER}]\ntoken_url = {}\noauth2_scope = mail\noauth2_flow = client_credentials\n\
             client_id = post-client\nclient_secret = post-secret~2\nredirect_uri = http://localhost\n",
            p.smtp_port(Server::Dovecot, false),
            p.var("TOKEN_URL"),
        ),
    )
    .expect("write the config");
    let child = Command::new(command)
        .args(["--no-gui", "--config-file"])
        .arg(&config)
        .env("SSL_CERT_FILE", p.var("CA_FILE"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("emailproxy");
    wait_for_port(port);
    EmailProxy { child, port }
}

/// Resident memory of process `pid` (VmRSS), KiB.
fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Idle local sessions opened at once for the memory line.
const IDLE_SESSIONS: u64 = 50;

/// Opens [`IDLE_SESSIONS`] sessions on `port`, each logged in (AUTH PLAIN)
/// and left open, and returns the growth of `pid`'s resident memory per
/// session, in KiB (with the figures before and after).
fn rss_per_session(port: u16, pid: &str) -> (f64, u64, u64) {
    use std::io::{BufRead, BufReader, Write};
    // base64 of "\0sender@example.com\0local-password-1".
    const PLAIN: &str = "AHNlbmRlckBleGFtcGxlLmNvbQBsb2NhbC1wYXNzd29yZC0x";
    let before = rss_kib(pid);
    let mut open = Vec::new();
    for _ in 0..IDLE_SESSIONS {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut writer = stream;
        let mut line = String::new();
        let mut until = |reader: &mut BufReader<TcpStream>, code: &str| loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line.starts_with(code) {
                break;
            }
        };
        until(&mut reader, "220 ");
        writer.write_all(b"EHLO bench\r\n").expect("write");
        until(&mut reader, "250 ");
        writer
            .write_all(format!("AUTH PLAIN {PLAIN}\r\n").as_bytes())
            .expect("write");
        until(&mut reader, "235");
        open.push((reader, writer));
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kib(pid);
    drop(open);
    (
        after.saturating_sub(before) as f64 / IDLE_SESSIONS as f64,
        before,
        after,
    )
}

fn bench(c: &mut Criterion) {
    let Some(p) = Peers::get() else { return };
    // The direct rows: clients that do OAuth2 themselves, with a token
    // fetched once (the cheapest a direct client can be).
    let token = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(postern_tokio::fetch_token(
            &p.oauth("post-client", "post-secret~2", false),
            &p.tls(),
        ))
        .expect("a token");
    let mut targets = vec![
        Target {
            name: "direct",
            port: p.smtp_port(Server::Dovecot, false),
            user: SENDER.into(),
            password: format!("xoauth2:{}", token.access_token.expose()),
            ca: Some(p.var("CA_FILE").to_owned()),
        },
        Target {
            name: "postern-proxy",
            port: postern_proxy(&p),
            user: SENDER.into(),
            password: LOCAL_PASSWORD.into(),
            ca: None,
        },
    ];
    let _email_proxy = match std::env::var("POSTERN_EMAILPROXY") {
        Ok(command) if PathBuf::from(&command).exists() => {
            let ep = email_proxy(&p, &command);
            targets.push(Target {
                name: "email-oauth2-proxy",
                port: ep.port,
                user: SENDER.into(),
                password: LOCAL_PASSWORD.into(),
                ca: None,
            });
            Some(ep)
        }
        _ => {
            eprintln!(
                "email-oauth2-proxy not installed (POSTERN_EMAILPROXY): its rows are left out"
            );
            None
        }
    };
    // Warm up: tokens fetched, connections open, first logins verified.
    for t in &targets {
        clients(t, "persistent", CLIENTS as u64);
    }
    let mut group = c.benchmark_group("proxy-1KiB-10-clients");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    for mode in ["persistent", "per-message"] {
        for t in &targets {
            group.bench_function(BenchmarkId::new(t.name, mode), |b| {
                b.iter_custom(|iters| {
                    let batch = if mode == "persistent" {
                        iters.max(PERSISTENT_BATCH)
                    } else {
                        iters
                    };
                    clients(t, mode, batch).mul_f64(iters as f64 / batch as f64)
                });
            });
        }
    }
    group.finish();
    // Memory per idle local session, written next to criterion's results.
    let mut lines = Vec::new();
    let own = std::process::id().to_string();
    for t in &targets[1..] {
        let pid = match t.name {
            "postern-proxy" => own.clone(),
            _ => _email_proxy
                .as_ref()
                .map(|e| e.child.id().to_string())
                .unwrap_or_default(),
        };
        let (per, before, after) = rss_per_session(t.port, &pid);
        lines.push(format!(
            "{}: {per:.0} KiB resident per idle local session ({IDLE_SESSIONS} sessions after AUTH: {before} KiB before, {after} KiB with them open).\n",
            t.name
        ));
    }
    let text = lines.concat();
    eprint!("{text}");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/criterion");
    let _ = std::fs::create_dir_all(dir);
    let _ = std::fs::write(format!("{dir}/proxy-rss.txt"), text);
}

criterion_group!(benches, bench);
criterion_main!(benches);
