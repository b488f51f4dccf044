//! Loopback end to end: 1 KiB messages to Postfix's `smtp-sink`, postern-tokio
//! against lettre's tokio transport, mail-send and Postfix's `smtp-source`
//! (C), with the same message count and sessions; and one 1 GiB message over
//! STARTTLS against raw rustls on the same kind of connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use postern_benches::workloads::{
    self, lettre, mail_send, message, postern, postern_pipelined, runtime,
};
use postern_test_support::{Generated, Pki, ServerTls, SmtpServer, SmtpServerConfig, SmtpSink};
use postern_tokio::{Envelope, Mailbox, Message, Security, TlsOptions, Transport};

/// Messages per session, the same for every contender but the as-shipped
/// lettre and mail-send rows: each session still sends many messages over
/// one connection.
const PER_SESSION: usize = 50;
/// Messages per session of lettre and mail-send as shipped. They wait for a
/// delayed ACK on every message (about 44 ms), so a sample of theirs takes
/// this × 44 ms whatever the CPU; the table compares time per message.
const AS_SHIPPED_PER_SESSION: usize = 10;

/// Messages per run in the CPU-per-message table.
const CPU_MESSAGES: usize = 2000;

/// The `TCP_NODELAY` shim (`benches/nodelay/nodelay.c`), when
/// `scripts/bench.sh` built it: the path in `POSTERN_NODELAY_SHIM`.
fn nodelay_shim() -> Option<String> {
    std::env::var("POSTERN_NODELAY_SHIM")
        .ok()
        .filter(|p| std::path::Path::new(p).exists())
}

/// Runs the `contender` binary once (`LD_PRELOAD`ing `shim` if given) and
/// returns the wall time and CPU time (µs) of its sends.
fn contender(
    name: &str,
    port: u16,
    sessions: usize,
    per_session: usize,
    shim: Option<&str>,
) -> (Duration, u64) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_contender"));
    cmd.args([
        name,
        &port.to_string(),
        &sessions.to_string(),
        &per_session.to_string(),
    ]);
    if let Some(shim) = shim {
        cmd.env("LD_PRELOAD", shim);
    }
    let out = cmd.output().expect("contender");
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text
        .split_whitespace()
        .map(|f| f.parse::<u64>().expect("number"));
    let nanos = fields.next().expect("elapsed");
    let cpu = fields.next().expect("cpu");
    (Duration::from_nanos(nanos), cpu)
}

fn smtp_source(port: u16, sessions: usize, per_session: usize) -> Duration {
    let start = Instant::now();
    let status = std::process::Command::new("/usr/sbin/smtp-source")
        .args([
            // One connection per session for all its messages, as the others.
            "-d",
            "-s",
            &sessions.to_string(),
            "-m",
            &(per_session * sessions).to_string(),
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
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    for sessions in [1usize, 10] {
        group.throughput(Throughput::Elements((PER_SESSION * sessions) as u64));
        let b1 = Arc::clone(&body);
        group.bench_function(BenchmarkId::new("postern-tokio", sessions), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    rt.block_on(postern(port, sessions, PER_SESSION, Arc::clone(&b1)));
                }
                start.elapsed()
            })
        });
        let bp = Arc::clone(&body);
        group.bench_function(BenchmarkId::new("postern-tokio+pipelined", sessions), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    rt.block_on(postern_pipelined(
                        port,
                        sessions,
                        PER_SESSION,
                        Arc::clone(&bp),
                    ));
                }
                start.elapsed()
            })
        });
        // The as-shipped rows stall about 44 ms on every message whatever the
        // CPU, so they send fewer messages a session (the ratio is per
        // message): their ten samples would otherwise take 88 s of the suite.
        group.throughput(Throughput::Elements(
            (AS_SHIPPED_PER_SESSION * sessions) as u64,
        ));
        let b2 = Arc::clone(&body);
        group.bench_function(BenchmarkId::new("lettre-0.11", sessions), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    rt.block_on(lettre(
                        port,
                        sessions,
                        AS_SHIPPED_PER_SESSION,
                        Arc::clone(&b2),
                    ));
                }
                start.elapsed()
            })
        });
        let b3 = Arc::clone(&body);
        group.bench_function(BenchmarkId::new("mail-send-0.7", sessions), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    rt.block_on(mail_send(
                        port,
                        sessions,
                        AS_SHIPPED_PER_SESSION,
                        Arc::clone(&b3),
                    ));
                }
                start.elapsed()
            })
        });
        group.throughput(Throughput::Elements((PER_SESSION * sessions) as u64));
        group.bench_function(BenchmarkId::new("smtp-source", sessions), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| smtp_source(port, sessions, PER_SESSION))
                    .sum()
            })
        });
        // The fair rows: the same contenders with TCP_NODELAY forced by the
        // shim, in a process of their own; the time is that of the sends.
        if let Some(shim) = nodelay_shim() {
            for (name, id) in [
                ("lettre", "lettre-0.11+nodelay"),
                ("mail-send", "mail-send-0.7+nodelay"),
            ] {
                let shim = shim.clone();
                group.bench_function(BenchmarkId::new(id, sessions), |b| {
                    b.iter_custom(|iters| {
                        (0..iters)
                            .map(|_| contender(name, port, sessions, PER_SESSION, Some(&shim)).0)
                            .sum()
                    })
                });
            }
        } else {
            eprintln!("POSTERN_NODELAY_SHIM not set: the +nodelay rows are skipped");
        }
    }
    group.finish();
    cpu_per_message(port);
}

/// User + system CPU time per message of each client, at 1 and 10
/// sessions, written to `target/criterion/cpu.txt` for BENCHMARKS.md.
/// Each contender runs in a process of its own (postern too), measured
/// around its sends; smtp-source is measured as a waited-for child (its
/// start-up included, a few hundred µs in all).
fn cpu_per_message(port: u16) {
    let shim = nodelay_shim();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut rows = Vec::new();
    for sessions in [1usize, 10] {
        let per_session = CPU_MESSAGES / sessions;
        let messages = (per_session * sessions) as f64;
        let source = median(
            (0..3)
                .map(|_| {
                    let before = workloads::cpu_children_us();
                    smtp_source(port, sessions, per_session);
                    (workloads::cpu_children_us() - before) as f64 / messages
                })
                .collect(),
        );
        let mut contenders = vec![
            ("postern-tokio", "postern", None),
            ("postern-tokio+pipelined", "postern-pipelined", None),
        ];
        if let Some(shim) = &shim {
            contenders.push(("lettre-0.11+nodelay", "lettre", Some(shim.as_str())));
            contenders.push(("mail-send-0.7+nodelay", "mail-send", Some(shim.as_str())));
        }
        for (label, name, preload) in contenders {
            let cpu = median(
                (0..3)
                    .map(|_| {
                        contender(name, port, sessions, per_session, preload).1 as f64 / messages
                    })
                    .collect(),
            );
            rows.push(format!(
                "| {sessions} | {label} | {cpu:.1} µs | {:.2}× |",
                cpu / source
            ));
        }
        rows.push(format!(
            "| {sessions} | smtp-source | {source:.1} µs | 1.00× |"
        ));
    }
    let table = format!(
        "### cpu-per-message\n\nClient user + system CPU time per 1 KiB message to smtp-sink ({CPU_MESSAGES} messages a run, median of 3). \"vs smtp-source\" below 1× means less CPU than Postfix's C client.\n\n| sessions | client | CPU per message | vs smtp-source |\n| --- | --- | ---: | ---: |\n{}\n\n",
        rows.join("\n")
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion");
    std::fs::create_dir_all(&dir).ok();
    std::fs::write(dir.join("cpu.txt"), table).expect("cpu.txt");
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
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(12));
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
