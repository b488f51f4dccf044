//! The loopback workloads, the same for every contender: `sessions`
//! concurrent sessions, each sending `per_session` 1 KiB messages over one
//! connection. Used by the criterion benchmarks in-process and by the
//! `contender` binary in a process of its own (for the `TCP_NODELAY` shim
//! and CPU accounting).

use std::sync::Arc;

use postern_tokio::{Envelope, Mailbox, Message, PoolConfig, Security, Transport};

/// The 1 KiB message every contender sends.
#[must_use]
pub fn message() -> Vec<u8> {
    let mut m = b"From: <a@example.com>\r\nTo: <b@example.com>\r\nSubject: bench\r\n\r\n".to_vec();
    while m.len() < 1022 {
        m.extend_from_slice(b"The quick brown fox jumps over the lazy dog, again and again.\r\n");
    }
    m.truncate(1022);
    m.extend_from_slice(b"\r\n");
    m
}

/// The runtime every contender runs on: tokio, two worker threads.
///
/// # Panics
/// When tokio cannot start its threads.
#[must_use]
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A postern transport with a pool of `sessions` connections, and the
/// envelope every contender uses.
fn transport(port: u16, sessions: usize, pipelined: bool) -> (Transport, Envelope) {
    let t = Transport::builder("127.0.0.1")
        .port(port)
        .security(Security::Plaintext)
        .pipeline_transactions(pipelined)
        .pool(
            PoolConfig::default()
                .max_connections(sessions)
                .max_messages_per_connection(u32::MAX),
        )
        .build()
        .expect("transport");
    let envelope = Envelope::new(
        Mailbox::parse("a@example.com").expect("valid"),
        [Mailbox::parse("b@example.com").expect("valid")],
    );
    (t, envelope)
}

/// postern-tokio: one transport, a pool of `sessions` connections.
///
/// # Panics
/// When a send fails (the benchmark is then void).
pub async fn postern(port: u16, sessions: usize, per_session: usize, body: Arc<[u8]>) {
    let (t, envelope) = transport(port, sessions, false);
    let mut tasks = Vec::new();
    for _ in 0..sessions {
        let t = t.clone();
        let envelope = envelope.clone();
        let body = Arc::clone(&body);
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_session {
                t.send(&envelope, Message::bytes(Arc::clone(&body)))
                    .await
                    .expect("sent");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    t.shutdown().await;
}

/// postern-tokio with `Transport::send_all`: each session sends its
/// messages as one batch over one connection, pipelined across
/// transactions (the next envelope right after each final `.`).
///
/// # Panics
/// When a send fails.
pub async fn postern_pipelined(port: u16, sessions: usize, per_session: usize, body: Arc<[u8]>) {
    let (t, envelope) = transport(port, sessions, true);
    let mut tasks = Vec::new();
    for _ in 0..sessions {
        let t = t.clone();
        let batch: Vec<(Envelope, Message)> = (0..per_session)
            .map(|_| (envelope.clone(), Message::bytes(Arc::clone(&body))))
            .collect();
        tasks.push(tokio::spawn(async move {
            for result in t.send_all(batch).await {
                result.expect("sent");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    t.shutdown().await;
}

/// lettre's tokio transport with a pool of `sessions` connections.
///
/// # Panics
/// When a send fails.
pub async fn lettre(port: u16, sessions: usize, per_session: usize, body: Arc<[u8]>) {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
    let pool =
        lettre::transport::smtp::PoolConfig::new().max_size(u32::try_from(sessions).unwrap_or(1));
    let t: AsyncSmtpTransport<Tokio1Executor> =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(port)
            .pool_config(pool)
            .build();
    let envelope = lettre::address::Envelope::new(
        Some("a@example.com".parse().expect("valid")),
        vec!["b@example.com".parse().expect("valid")],
    )
    .expect("envelope");
    let mut tasks = Vec::new();
    for _ in 0..sessions {
        let t = t.clone();
        let envelope = envelope.clone();
        let body = Arc::clone(&body);
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_session {
                t.send_raw(&envelope, &body).await.expect("sent");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
}

/// mail-send: one client (one connection) per session.
///
/// # Panics
/// When a send fails.
pub async fn mail_send(port: u16, sessions: usize, per_session: usize, body: Arc<[u8]>) {
    let mut tasks = Vec::new();
    for _ in 0..sessions {
        let body = Arc::clone(&body);
        tasks.push(tokio::spawn(async move {
            let mut client = mail_send::SmtpClientBuilder::new("127.0.0.1".to_owned(), port)
                .expect("builder")
                .connect_plain()
                .await
                .expect("connect");
            for _ in 0..per_session {
                let m = mail_send::smtp::message::Message::new(
                    "a@example.com",
                    ["b@example.com"],
                    &body[..],
                );
                client.send(m).await.expect("sent");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
}

/// This process's user + system CPU time so far, in microseconds.
///
/// # Panics
/// When `getrusage` fails (it cannot for `RUSAGE_SELF`).
#[must_use]
pub fn cpu_self_us() -> u64 {
    cpu_us(nix::sys::resource::UsageWho::RUSAGE_SELF)
}

/// The user + system CPU time of this process's waited-for children, in
/// microseconds.
///
/// # Panics
/// When `getrusage` fails.
#[must_use]
pub fn cpu_children_us() -> u64 {
    cpu_us(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
}

fn cpu_us(who: nix::sys::resource::UsageWho) -> u64 {
    let usage = nix::sys::resource::getrusage(who).expect("getrusage");
    let us = |t: nix::sys::time::TimeVal| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec()).unwrap_or(0)
    };
    us(usage.user_time()) + us(usage.system_time())
}
