//! Many processes, one mailbox: N OS processes (this test binary, run again
//! as workers) send through the real peers of `tests/peers`, sharing one
//! token record and one set of limits in a real `redis-server` or in a
//! file store.
//!
//! - The refresh token is `short-public`'s: its access tokens live 4 s and
//!   oidc-provider rotates the refresh token on every use and revokes the
//!   whole grant when a used one comes back, so a double redemption fails
//!   the run.
//! - The SMTP connections go through a counting forwarder in front of
//!   Dovecot: it records the most connections open at once.
//! - Every message is found exactly once in the Maildir, by Message-ID.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use postern_test_support::peers::{Peers, Server};
use postern_test_support::redis::RedisServer as Redis;
use postern_tokio::{
    CacheConfig, ClientCredential, Endpoint, Envelope, Error, Mailbox, MailboxLimits, OAuth2,
    PoolConfig, Secret, Sharing, StoreKey, TokenGrant, open_store,
};

const WORKERS: usize = 4;
const PER_WORKER: usize = 500;
const CONNECTION_LIMIT: u32 = 3;

/// The worker: runs only when the parent sets `POSTERN_FLEET_WORKER`.
#[test]
fn fleet_worker() {
    let Ok(spec) = std::env::var("POSTERN_FLEET_WORKER") else {
        return;
    };
    let cfg: BTreeMap<String, String> = spec
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let get = |k: &str| cfg.get(k).cloned().unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let line = rt.block_on(async move {
        let p = Peers::get().unwrap();
        let oauth = OAuth2::new(
            "sender@example.com",
            Endpoint::parse_with(&get("token_url"), true).unwrap(),
            Some("short-public".to_owned()),
            ClientCredential::None,
            TokenGrant::RefreshToken(Secret::new(get("refresh"))),
        )
        .scope("openid offline_access mail")
        .cache_config(CacheConfig::default().expiry_margin(Duration::from_millis(500)));
        let limits = MailboxLimits::none().connections(Some(CONNECTION_LIMIT));
        let sharing = Sharing::new(open_store(&get("store")).unwrap())
            .namespace(get("namespace"))
            .lease(Duration::from_millis(get("lease_ms").parse().unwrap_or(30_000)))
            .op_timeout(Duration::from_millis(500))
            .limits(limits);
        let sharing = match get("store_key").as_str() {
            "" => sharing,
            key => sharing.store_key(StoreKey::from_base64(key).unwrap()),
        };
        let transport = p
            .builder::<postern_tokio::Tokio>(Server::Dovecot, true, "localhost")
            .port(get("smtp_port").parse().unwrap())
            .oauth2(oauth)
            .pool(PoolConfig::default().max_connections(4))
            .share(sharing)
            .build()
            .unwrap();
        let count: usize = get("count").parse().unwrap();
        let pause = Duration::from_millis(get("pause_ms").parse().unwrap_or(0));
        let tag = get("tag");
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        let started = Instant::now();
        let first_ok = Arc::new(std::sync::Mutex::new(None::<Duration>));
        for _ in 0..6 {
            let transport = transport.clone();
            let next = Arc::clone(&next);
            let tag = tag.clone();
            let first_ok = Arc::clone(&first_ok);
            tasks.push(tokio::spawn(async move {
                let (mut sent, mut retried, mut lost) = (0usize, 0usize, 0usize);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let id = format!("{tag}-{i}");
                    let body = format!(
                        "From: <sender@example.com>\r\nTo: <rcpt@example.com>\r\nSubject: {id}\r\nMessage-ID: <{id}@fleet.test>\r\n\r\nfleet message {id}\r\n"
                    );
                    let envelope = Envelope::new(
                        Mailbox::parse("sender@example.com").unwrap(),
                        [Mailbox::parse("rcpt@example.com").unwrap()],
                    );
                    let mut attempts = 0;
                    loop {
                        match transport.send(&envelope, body.clone()).await {
                            Ok(_) => {
                                sent += 1;
                                first_ok.lock().unwrap().get_or_insert(started.elapsed());
                                if pause > Duration::ZERO {
                                    tokio::time::sleep(pause).await;
                                }
                                break;
                            }
                            // Maybe delivered: never sent again; counted.
                            Err(Error::Unconfirmed(e)) => {
                                eprintln!("unconfirmed {id}: {e}");
                                lost += 1;
                                break;
                            }
                            Err(e) if attempts < 60 => {
                                eprintln!("retrying {id}: {e}");
                                attempts += 1;
                                retried += 1;
                                tokio::time::sleep(Duration::from_millis(250)).await;
                            }
                            Err(e) => panic!("{id}: {e}"),
                        }
                    }
                }
                (sent, retried, lost)
            }));
        }
        let (mut sent, mut retried, mut lost) = (0, 0, 0);
        for t in tasks {
            let (s, r, l) = t.await.unwrap();
            sent += s;
            retried += r;
            lost += l;
        }
        let stats = transport.stats();
        transport.shutdown().await;
        let first = first_ok.lock().unwrap().map_or(0, |d| d.as_millis());
        format!(
            "FLEET-RESULT sent={sent} retried={retried} unconfirmed={lost} fetches={} degraded={} first_ok_ms={first}",
            stats.token_fetches, stats.store_degraded
        )
    });
    println!("{line}");
}

fn spawn_worker(spec: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "fleet_worker",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("POSTERN_FLEET_WORKER", spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a worker and reads its result line.
fn finish(child: Child) -> BTreeMap<String, u64> {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .find_map(|l| l.find("FLEET-RESULT").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("worker gave no result:\n{stdout}\n{stderr}"));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let retries = stderr.lines().filter(|l| l.starts_with("retrying")).take(5);
    for l in retries {
        eprintln!("worker: {l}");
    }
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                k.to_owned(),
                if v == "true" {
                    1
                } else {
                    v.parse().unwrap_or(0)
                },
            )
        })
        .collect()
}

/// A TCP forwarder to `target` that records the most connections open at
/// once: the server side's view of the mailbox's concurrent connections.
struct Counter {
    port: u16,
    max: Arc<AtomicUsize>,
}

fn counting_forwarder(target: u16) -> Counter {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let max2 = Arc::clone(&max);
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            let now = open.fetch_add(1, Ordering::SeqCst) + 1;
            max2.fetch_max(now, Ordering::SeqCst);
            let open = Arc::clone(&open);
            std::thread::spawn(move || {
                // A session ends for the server when either side closes
                // (after QUIT, the server's own close).
                let ended = Arc::new(AtomicBool::new(false));
                let end = move || {
                    if !ended.swap(true, Ordering::SeqCst) {
                        open.fetch_sub(1, Ordering::SeqCst);
                    }
                };
                pipe_both_with(client, server, end);
            });
        }
    });
    Counter { port, max }
}

/// Copies both ways until both sides are closed.
fn pipe_both(a: TcpStream, b: TcpStream) {
    pipe_both_with(a, b, || {});
}

/// Copies both ways; `first_close` runs when the first direction ends.
fn pipe_both_with(a: TcpStream, b: TcpStream, first_close: impl Fn() + Send + Sync + 'static) {
    let first_close = Arc::new(first_close);
    let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let f2 = Arc::clone(&first_close);
    let up = std::thread::spawn(move || {
        copy(a, b2);
        f2();
    });
    copy(b, a2);
    first_close();
    let _ = up.join();
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

/// The values of the keys matching `pattern` in the Redis at `port`, read
/// with raw RESP (KEYS, then GET each).
fn redis_values(port: u16, pattern: &str) -> Vec<Vec<u8>> {
    fn command(s: &mut TcpStream, args: &[&str]) {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(out.as_bytes()).unwrap();
    }
    fn line(r: &mut std::io::BufReader<TcpStream>) -> String {
        let mut l = String::new();
        std::io::BufRead::read_line(r, &mut l).unwrap();
        l.trim_end().to_owned()
    }
    fn bulk(r: &mut std::io::BufReader<TcpStream>, header: &str) -> Vec<u8> {
        let n: usize = header[1..].parse().unwrap();
        let mut buf = vec![0; n + 2];
        r.read_exact(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut r = std::io::BufReader::new(s.try_clone().unwrap());
    command(&mut s, &["KEYS", pattern]);
    let n: usize = line(&mut r)[1..].parse().unwrap();
    let keys: Vec<String> = (0..n)
        .map(|_| {
            let h = line(&mut r);
            String::from_utf8(bulk(&mut r, &h)).unwrap()
        })
        .collect();
    keys.iter()
        .map(|k| {
            command(&mut s, &["GET", k]);
            let h = line(&mut r);
            bulk(&mut r, &h)
        })
        .collect()
}

fn mint(p: &Peers) -> (String, String) {
    p.mint_refresh_token("short-public", "sender@example.com")
}

fn token_stats(p: &Peers, grant: &str) -> BTreeMap<String, u64> {
    p.grant_stats(grant)
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

/// The Message-IDs of the run `tag` in rcpt's Maildir, with how often each
/// was found, waiting until `count` are there (or 60 s).
fn delivered(p: &Peers, tag: &str, count: usize) -> BTreeMap<String, usize> {
    let dir = std::path::PathBuf::from(p.var("MAIL_DIR")).join("example.com/rcpt/new");
    let needle = format!("Message-ID: <{tag}-");
    let start = Instant::now();
    loop {
        let mut ids: BTreeMap<String, usize> = BTreeMap::new();
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if let Ok(text) = std::fs::read_to_string(e.path())
                && let Some(at) = text.find(&needle)
            {
                let id = text[at..].lines().next().unwrap().to_owned();
                *ids.entry(id).or_default() += 1;
            }
        }
        if ids.values().sum::<usize>() >= count || start.elapsed() > Duration::from_secs(60) {
            return ids;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Fleet {
    refresh: String,
    results: Vec<BTreeMap<String, u64>>,
    tokens: BTreeMap<String, u64>,
    elapsed: Duration,
    max_connections: usize,
}

/// Runs `WORKERS` processes of `PER_WORKER` messages on `store`, calling
/// `during` while they run, and checks delivery: every message exactly once.
/// The store key the Redis fleet seals its records with.
const STORE_KEY: &str = "q2dkPZ6MmE4Ux0N8HbnL0Nf0Gq6b7tqyy0BTRs1u3m8=";

fn fleet(p: &Peers, store: &str, pause_ms: u64, during: impl FnOnce()) -> Fleet {
    fleet_with(p, store, pause_ms, "", during)
}

fn fleet_with(
    p: &Peers,
    store: &str,
    pause_ms: u64,
    store_key: &str,
    during: impl FnOnce(),
) -> Fleet {
    let counter = counting_forwarder(p.smtp_port(Server::Dovecot, true));
    let (refresh, grant) = mint(p);
    let before = token_stats(p, &grant);
    let tag = unique("fleet");
    let namespace = unique("ns");
    let started = Instant::now();
    let children: Vec<Child> = (0..WORKERS)
        .map(|w| {
            spawn_worker(&format!(
                "store={store};namespace={namespace};token_url={};refresh={refresh};smtp_port={};count={PER_WORKER};tag={tag}-w{w};pause_ms={pause_ms};store_key={store_key}",
                p.var("TOKEN_URL"),
                counter.port
            ))
        })
        .collect();
    during();
    let results: Vec<_> = children.into_iter().map(finish).collect();
    let elapsed = started.elapsed();
    let tokens = delta(&before, &token_stats(p, &grant));
    let ids = delivered(p, &tag, WORKERS * PER_WORKER);
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let sent: u64 = results.iter().map(|r| r["sent"]).sum();
    let unconfirmed: u64 = results.iter().map(|r| r["unconfirmed"]).sum();
    assert_eq!(unconfirmed, 0, "{results:?}");
    assert_eq!(sent as usize, WORKERS * PER_WORKER, "{results:?}");
    assert_eq!(ids.len(), WORKERS * PER_WORKER, "messages in the Maildir");
    let expected: BTreeSet<String> = (0..WORKERS)
        .flat_map(|w| {
            let tag = &tag;
            (0..PER_WORKER).map(move |i| format!("Message-ID: <{tag}-w{w}-{i}@fleet.test>"))
        })
        .collect();
    assert_eq!(ids.keys().cloned().collect::<BTreeSet<_>>(), expected);
    Fleet {
        refresh,
        results,
        tokens,
        elapsed,
        max_connections: counter.max.load(Ordering::SeqCst),
    }
}

fn check_tokens(f: &Fleet, what: &str) {
    let ok = f.tokens.get("success:refresh_token").copied().unwrap_or(0);
    let errors: Vec<_> = f.tokens.keys().filter(|k| k.starts_with("error")).collect();
    // Tokens live 4 s and are refreshed 2 s before expiry: one request per
    // 2 s for the whole fleet, plus the first.
    let expiries = f.elapsed.as_secs_f64() / 2.0;
    let fetches: u64 = f.results.iter().map(|r| r["fetches"]).sum();
    eprintln!(
        "{what}: {} messages from {WORKERS} processes in {:.1} s; token requests at the server {ok} \
         (the processes' own count {fetches}), refresh intervals in the run {expiries:.1}, \
         without sharing about {:.0}; most SMTP connections at once {} (limit {CONNECTION_LIMIT})",
        WORKERS * PER_WORKER,
        f.elapsed.as_secs_f64(),
        expiries * WORKERS as f64,
        f.max_connections
    );
    assert!(
        errors.is_empty(),
        "a token request failed (a refresh token redeemed twice?): {:?}",
        f.tokens
    );
    assert!(ok >= 1);
    assert!(
        (ok as f64) <= expiries + 3.0,
        "{ok} token requests for {expiries:.1} refresh intervals"
    );
}

#[test]
fn redis_store_many_processes() {
    let Some(p) = Peers::get() else { return };
    let Some(redis) = Redis::start() else { return };
    // Paced a little so the run spans several token lifetimes; records
    // sealed with a store key.
    let f = fleet_with(&p, &redis.url(), 30, STORE_KEY, || {});
    check_tokens(&f, "redis");
    assert!(
        f.max_connections as u32 <= CONNECTION_LIMIT,
        "{} connections",
        f.max_connections
    );
    assert!(
        f.max_connections >= 2,
        "the limit was never reached: the test proves little"
    );
    // What an attacker with Redis access reads: sealed records only.
    let records = redis_values(redis.port(), "*:token:*");
    assert_eq!(records.len(), 1, "one token record");
    for r in &records {
        assert!(r.starts_with(b"postern-sealed-v1:"));
        let original = f.refresh.as_bytes();
        assert!(!r.windows(original.len()).any(|w| w == original));
    }
    for r in &f.results {
        assert_eq!(r["degraded"], 0, "{r:?}");
    }
}

#[test]
fn file_store_many_processes() {
    let Some(p) = Peers::get() else { return };
    let dir = std::env::temp_dir().join(unique("postern-store"));
    let f = fleet(&p, &format!("file:{}", dir.display()), 30, || {});
    check_tokens(&f, "file");
    assert!(
        f.max_connections as u32 <= CONNECTION_LIMIT,
        "{} connections",
        f.max_connections
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert!(!entries.is_empty());
        for e in entries {
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", e.path().display());
        }
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// redis-server killed mid-run and restarted: sends go on (each process
/// alone meanwhile), nothing is lost or doubled, and sharing resumes.
#[test]
fn redis_killed_and_restarted_mid_run() {
    let Some(p) = Peers::get() else { return };
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let down = Arc::new(AtomicBool::new(false));
    // Paced (about 170 messages a second in all), so that the run goes on
    // well past the restart and every process sees the store come back.
    let f = fleet(&p, &redis.url(), 140, || {
        std::thread::sleep(Duration::from_millis(3000));
        redis.kill();
        down.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(1000));
        redis.restart();
    });
    assert!(down.load(Ordering::SeqCst));
    check_tokens(&f, "redis killed for 1 s");
    eprintln!("redis killed for 1 s: workers {:?}", f.results);
    for r in &f.results {
        assert_eq!(r["degraded"], 0, "sharing did not resume: {r:?}");
    }
}

/// The lease holder is killed in the middle of its token request: the next
/// process waits for the lease to lapse, then fetches, and the refresh
/// token (never redeemed by the dead one) still works.
#[test]
fn lease_holder_killed_mid_fetch() {
    let Some(p) = Peers::get() else { return };
    let Some(redis) = Redis::start() else { return };
    // A token endpoint that swallows the first request and forwards the
    // rest to oidc-provider.
    let token_port: u16 = p
        .var("TOKEN_URL")
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let seen2 = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for client in listener.incoming().flatten() {
            if seen2.fetch_add(1, Ordering::SeqCst) == 0 {
                held.push(client);
                continue;
            }
            if let Ok(server) = TcpStream::connect(("127.0.0.1", token_port)) {
                std::thread::spawn(move || pipe_both(client, server));
            }
        }
    });
    let counter = counting_forwarder(p.smtp_port(Server::Dovecot, true));
    let (refresh, grant) = mint(&p);
    let before = token_stats(&p, &grant);
    let tag = unique("lease");
    let namespace = unique("ns");
    let lease_ms = 3000;
    let spec = |w: usize, count: usize| {
        format!(
            "store={};namespace={namespace};token_url=http://127.0.0.1:{port}/token;refresh={refresh};smtp_port={};count={count};tag={tag}-w{w};lease_ms={lease_ms}",
            redis.url(),
            counter.port
        )
    };
    let mut holder = spawn_worker(&spec(0, 1));
    let start = Instant::now();
    while seen.load(Ordering::SeqCst) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the first worker never asked for a token"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let taken = Instant::now();
    holder.kill().unwrap();
    let _ = holder.wait();
    let next = spawn_worker(&spec(1, 5));
    let r = finish(next);
    let waited = taken.elapsed();
    assert_eq!(r["sent"], 5, "{r:?}");
    // The second process could not fetch before the lease lapsed...
    assert!(
        waited >= Duration::from_millis(lease_ms - 200),
        "fetched after {waited:?}, inside the dead holder's lease"
    );
    // ...and took over within the lease time plus its start-up.
    assert!(
        waited <= Duration::from_millis(lease_ms + 8000),
        "{waited:?}"
    );
    let tokens = delta(&before, &token_stats(&p, &grant));
    assert_eq!(
        tokens.get("success:refresh_token"),
        Some(&1),
        "{tokens:?} {r:?}"
    );
    assert!(!tokens.keys().any(|k| k.starts_with("error")), "{tokens:?}");
    eprintln!(
        "lease holder killed: the next process delivered after {waited:?} (lease {lease_ms} ms)"
    );
    let ids = delivered(&p, &tag, 5);
    assert_eq!(ids.len(), 5);
}
