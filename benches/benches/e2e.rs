//! Loopback end to end: 1 KiB messages to Postfix's `smtp-sink`, postern-tokio
//! against lettre's tokio transport, mail-send and Postfix's `smtp-source`
//! (C), with the same message count and sessions; and one 1 GiB message over
//! STARTTLS against raw rustls on the same kind of connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use postern_test_support::{Generated, Pki, ServerTls, SmtpServer, SmtpServerConfig, SmtpSink};
use postern_tokio::{Envelope, Mailbox, Message, Security, TlsOptions, Transport};

/// Messages per session, the same for every contender. lettre and mail-send
/// wait for a delayed ACK on every message (about 44 ms), so a sample of
/// theirs takes `PER_SESSION` × 44 ms; 50 keeps the whole suite under ten
/// minutes while each session still sends many messages over one connection.
const PER_SESSION: usize = 50;

fn message() -> Vec<u8> {
    let mut m = b"From: <a@example.com>\r\nTo: <b@example.com>\r\nSubject: bench\r\n\r\n".to_vec();
    while m.len() < 1022 {
        m.extend_from_slice(b"The quick brown fox jumps over the lazy dog, again and again.\r\n");
    }
    m.truncate(1022);
    m.extend_from_slice(b"\r\n");
    m
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn postern(port: u16, sessions: usize, body: Arc<[u8]>) {
    let t = Transport::builder("127.0.0.1")
        .port(port)
        .security(Security::Plaintext)
        .pool(
            postern_tokio::PoolConfig::default()
                .max_connections(sessions)
                .max_messages_per_connection(u32::MAX),
        )
        .build()
        .expect("transport");
    let envelope = Envelope::new(
        Mailbox::parse("a@example.com").expect("valid"),
        [Mailbox::parse("b@example.com").expect("valid")],
    );
    let mut tasks = Vec::new();
    for _ in 0..sessions {
        let t = t.clone();
        let envelope = envelope.clone();
        let body = Arc::clone(&body);
        tasks.push(tokio::spawn(async move {
            for _ in 0..PER_SESSION {
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

async fn lettre(port: u16, sessions: usize, body: Arc<[u8]>) {
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
            for _ in 0..PER_SESSION {
                t.send_raw(&envelope, &body).await.expect("sent");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
}

async fn mail_send(port: u16, sessions: usize, body: Arc<[u8]>) {
    let mut tasks = Vec::new();
    for _ in 0..sessions {
        let body = Arc::clone(&body);
        tasks.push(tokio::spawn(async move {
            let mut client = mail_send::SmtpClientBuilder::new("127.0.0.1".to_owned(), port)
                .expect("builder")
                .connect_plain()
                .await
                .expect("connect");
            for _ in 0..PER_SESSION {
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

fn smtp_source(port: u16, sessions: usize) -> Duration {
    let start = Instant::now();
    let status = std::process::Command::new("/usr/sbin/smtp-source")
        .args([
            // One connection per session for all its messages, as the others.
            "-d",
            "-s",
            &sessions.to_string(),
            "-m",
            &(PER_SESSION * sessions).to_string(),
            "-l",
            "1024",
            "-f",
            "a@example.com",
            "-t",
            "b@example.com",
            &format!("127.0.0.1:{port}"),
        ])
        .status()
        .expect("smtp-source");
    assert!(status.success());
    start.elapsed()
}

fn loopback(c: &mut Criterion) {
    let Some(sink) = SmtpSink::start().expect("smtp-sink") else {
        eprintln!("smtp-sink is not installed: loopback group skipped");
        return;
    };
    let port = sink.port();
    let rt = runtime();
    let body: Arc<[u8]> = message().into();
    let mut group = c.benchmark_group("loopback-1KiB-to-smtp-sink");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for sessions in [1usize, 10] {
        group.throughput(Throughput::Elements((PER_SESSION * sessions) as u64));
        let b1 = Arc::clone(&body);
        group.bench_function(BenchmarkId::new("postern-tokio", sessions), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    rt.block_on(postern(port, sessions, Arc::clone(&b1)));
                }
                start.elapsed()
            })
        });
        let b2 = Arc::clone(&body);
        group.bench_function(BenchmarkId::new("lettre-0.11", sessions), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    rt.block_on(lettre(port, sessions, Arc::clone(&b2)));
                }
                start.elapsed()
            })
        });
        let b3 = Arc::clone(&body);
        group.bench_function(BenchmarkId::new("mail-send-0.7", sessions), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    rt.block_on(mail_send(port, sessions, Arc::clone(&b3)));
                }
                start.elapsed()
            })
        });
        group.bench_function(BenchmarkId::new("smtp-source", sessions), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| smtp_source(port, sessions)).sum())
        });
    }
    group.finish();
}

/// A TLS server that reads and discards: the raw rustls baseline.
async fn tls_discard_server(pki: &Pki) -> u16 {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.localhost.server_config());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    port
}

async fn raw_rustls(port: u16, ca: &str, bytes: u64) {
    use tokio::io::AsyncWriteExt;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()).flatten() {
        roots.add(cert).expect("root");
    }
    use rustls::pki_types::pem::PemObject;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().expect("name"), tcp)
        .await
        .expect("handshake");
    let chunk = postern_benches::crlf_text(64 * 1024);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        tls.write_all(&chunk[..n]).await.expect("write");
        left -= n as u64;
    }
    tls.shutdown().await.expect("shutdown");
}

fn one_gib_over_tls(c: &mut Criterion) {
    const GIB: u64 = 1 << 30;
    let rt = runtime();
    let pki = Pki::generate();
    let server = SmtpServer::start(SmtpServerConfig {
        tls: ServerTls::StartTls(pki.localhost.server_config()),
        keep_bodies: false,
        hash_bodies: false,
        ..SmtpServerConfig::default()
    })
    .expect("server");
    let raw_port = rt.block_on(tls_discard_server(&pki));
    let mut group = c.benchmark_group("1GiB-over-TLS");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Bytes(GIB));
    group.bench_function("postern-tokio-starttls", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut tls = TlsOptions::default();
                tls.add_root_pem(pki.ca_pem.as_bytes()).expect("ca");
                let t = Transport::builder("localhost")
                    .port(server.port())
                    .security(Security::StartTls)
                    .tls(tls)
                    .build()
                    .expect("transport");
                let envelope = Envelope::new(
                    Mailbox::parse("a@example.com").expect("valid"),
                    [Mailbox::parse("b@example.com").expect("valid")],
                );
                let start = Instant::now();
                rt.block_on(async {
                    t.send(&envelope, Message::reader(Generated::new(GIB)))
                        .await
                        .expect("sent");
                });
                total += start.elapsed();
                rt.block_on(t.shutdown());
            }
            total
        })
    });
    group.bench_function("raw-rustls", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                rt.block_on(raw_rustls(raw_port, &pki.ca_pem, GIB));
            }
            start.elapsed()
        })
    });
    group.finish();
    if let Some(peak) = postern_test_support::peak_rss() {
        let line = format!(
            "Peak RSS of the loopback and 1 GiB benchmark process: {:.1} MiB.\n",
            peak as f64 / 1_048_576.0
        );
        eprint!("{line}");
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/criterion");
        let _ = std::fs::create_dir_all(dir);
        let _ = std::fs::write(format!("{dir}/peak-rss.txt"), line);
    }
}

criterion_group!(benches, loopback, one_gib_over_tls);
criterion_main!(benches);
