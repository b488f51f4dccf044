//! Sharing among processes: what a token lookup costs with a shared store
//! behind the in-memory cache, and what a send costs with shared limits.
//!
//! - `shared-token-lookup`: the warm path every send takes (the process's
//!   own cache: the store is not touched), beside a cold process adopting
//!   the token another one fetched (one store read, decode, optionally
//!   decrypt, the core's plan) from Redis and from a file store.
//! - `shared-limits-send-1KiB`: one message over a pooled loopback
//!   connection to the test SMTP server, alone and with the mailbox's
//!   limits (3 connections, a message rate and a recipient quota, all too
//!   high to bind) counted in memory, in a file store and in Redis.
//!
//! Redis is a `redis-server` started for the run on a loopback port, with
//! AOF and `appendfsync always` (every write on disk before the reply: a
//! store holding rotated refresh tokens must not lose one), and for the
//! send group also with `appendfsync everysec`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use postern_oauth::shared::{self, SharedConfig, SharedRecord, SharedToken, StoreKey};
use postern_oauth::{CacheConfig, Secret, TokenResponse};
use postern_test_support::redis::RedisServer;
use postern_test_support::{SmtpServer, SmtpServerConfig};
use postern_tokio::{
    Envelope, FileStore, Mailbox, MailboxLimits, MemoryStore, Rate, RedisStore, Security, Sharing,
    Store, Transport,
};

const MESSAGE_LEN: usize = 1024;

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(0)
}

fn record() -> SharedRecord {
    let mut r = SharedRecord::default();
    r.version = 42;
    r.token = Some(SharedToken::from_response(
        &TokenResponse::bearer(
            Secret::new("x".repeat(1500)),
            Some(Duration::from_secs(3600)),
        ),
        now_ms(),
        &CacheConfig::default(),
    ));
    r.refresh_token = Some(Secret::new("r".repeat(700)));
    r
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

fn token_lookup(c: &mut Criterion) {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let rt = runtime();
    let mut group = c.benchmark_group("shared-token-lookup");
    group.throughput(Throughput::Elements(1));

    let (mut cache, now) = postern_benches::warm_token_cache();
    group.bench_function("postern-warm-cache (store behind)", |b| {
        b.iter(|| black_box(cache.lookup(black_box(now)).token.is_some()))
    });

    let key_name = "bench:token:record";
    let sealing = StoreKey::new([7; 32]);
    let config = SharedConfig::default();
    let dir = std::env::temp_dir().join(format!("postern-bench-store-{}", std::process::id()));
    let file = FileStore::new(&dir).unwrap_or_else(|e| panic!("{e}"));
    let redis_store = RedisStore::new(&redis.url()).unwrap_or_else(|e| panic!("{e}"));
    for (name, store, key) in [
        ("redis-adopt", &redis_store as &dyn Store, None),
        (
            "redis-adopt-sealed",
            &redis_store as &dyn Store,
            Some(&sealing),
        ),
        ("file-adopt", &file as &dyn Store, None),
    ] {
        let name_key = format!("{key_name}:{name}");
        let bytes = record().to_bytes(key, &name_key, [3; 24]);
        rt.block_on(store.swap(&name_key, None, Some(&bytes)))
            .unwrap_or_else(|e| panic!("{e}"));
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let raw = store.get(&name_key).await.ok().flatten();
                    let r = raw.and_then(|raw| SharedRecord::from_bytes(&raw, key, &name_key).ok());
                    black_box(matches!(
                        shared::plan(r.as_ref(), now_ms(), "me", None, &config),
                        shared::Plan::Adopt(_)
                    ))
                })
            })
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn send_with_limits(c: &mut Criterion) {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let Some(everysec) = RedisServer::start_with_fsync("everysec") else {
        return;
    };
    let rt = runtime();
    let server = rt.block_on(async { SmtpServer::start(SmtpServerConfig::default()) });
    let server = server.unwrap_or_else(|e| panic!("{e}"));
    let limits = MailboxLimits::none()
        .connections(Some(3))
        .messages(Some(Rate::per_minute(1_000_000_000)))
        .recipients(Some(Rate::per_day(1_000_000_000)));
    let dir = std::env::temp_dir().join(format!("postern-bench-limits-{}", std::process::id()));
    let stores: Vec<(&str, Option<Arc<dyn Store>>)> = vec![
        ("postern-alone", None),
        ("memory-store", Some(Arc::new(MemoryStore::new()))),
        (
            "file-store",
            Some(Arc::new(
                FileStore::new(&dir).unwrap_or_else(|e| panic!("{e}")),
            )),
        ),
        (
            "redis-store (fsync always)",
            Some(Arc::new(
                RedisStore::new(&redis.url()).unwrap_or_else(|e| panic!("{e}")),
            )),
        ),
        (
            "redis-store (fsync everysec)",
            Some(Arc::new(
                RedisStore::new(&everysec.url()).unwrap_or_else(|e| panic!("{e}")),
            )),
        ),
    ];
    let mut body =
        String::from("From: <a@example.com>\r\nTo: <b@example.com>\r\nSubject: bench\r\n\r\n");
    while body.len() < MESSAGE_LEN {
        body.push_str("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n");
    }
    let envelope = Envelope::new(
        Mailbox::parse("a@example.com").unwrap_or_else(|e| panic!("{e}")),
        [Mailbox::parse("b@example.com").unwrap_or_else(|e| panic!("{e}"))],
    );
    let mut group = c.benchmark_group("shared-limits-send-1KiB");
    group.throughput(Throughput::Elements(1));
    for (name, store) in stores {
        let mut b = Transport::builder("127.0.0.1")
            .port(server.port())
            .security(Security::Plaintext);
        if let Some(store) = store {
            b = b.share(Sharing::new(store).limits(limits));
        }
        let t = rt
            .block_on(async { b.build() })
            .unwrap_or_else(|e| panic!("{e}"));
        group.bench_function(name, |bench| {
            bench.iter(|| {
                rt.block_on(t.send(&envelope, body.as_str()))
                    .unwrap_or_else(|e| panic!("{e}"))
            })
        });
        rt.block_on(t.shutdown());
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn quick() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group!(name = benches; config = quick(); targets = token_lookup, send_with_limits);
criterion_main!(benches);
