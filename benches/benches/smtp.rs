//! Body encoder and reply parser throughput.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use postern_benches::{byte_loop_encode, crlf_text, dotted_text, eight_bit, lf_text};
use postern_smtp::{BodyConfig, BodyEncoder, ReplyParser};
use std::hint::black_box;

const CHUNK: usize = 64 * 1024;

/// The encoder's row name, with the vector width the build chose
/// (`scripts/bench.sh` runs this group once more with
/// `-C target-cpu=x86-64-v4` or `-v3` where the machine has them).
const POSTERN: &str = if cfg!(target_feature = "avx512bw") {
    "postern+x86-64-v4"
} else if cfg!(target_feature = "avx2") {
    "postern+x86-64-v3"
} else {
    "postern"
};

#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// Heap a connection keeps: a client after the greeting, EHLO and one 1 KiB
/// transaction, net of what it freed. Written next to criterion's results.
fn memory_per_connection() {
    use postern_smtp::{Client, ClientConfig, Envelope, Mailbox, Security};
    let region = stats_alloc::Region::new(GLOBAL);
    let now = std::time::Instant::now();
    let config = ClientConfig::default()
        .tls(Security::Plaintext)
        .use_chunking(false);
    let mut client = Box::new(Client::new(config, now));
    let _ = client.handle_input(
        now,
        b"220 mx ESMTP\r\n250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
    );
    let n = client.poll_transmit().map_or(0, <[u8]>::len);
    client.advance_transmit(n);
    while client.poll_event().is_some() {}
    let envelope = Envelope::new(
        Mailbox::parse("a@example.com").expect("valid"),
        [Mailbox::parse("b@example.com").expect("valid")],
    );
    client.send_envelope(now, &envelope).ok();
    let _ = client.handle_input(now, b"250 Ok\r\n250 Ok\r\n354 Go\r\n");
    while client.poll_event().is_some() {}
    client.write_body(now, &[b'x'; 1000]).ok();
    client.finish_body(now).ok();
    let _ = client.handle_input(now, b"250 queued\r\n");
    while client.poll_event().is_some() {}
    let n = client.poll_transmit().map_or(0, <[u8]>::len);
    client.advance_transmit(n);
    let stats = region.change();
    let heap = stats
        .bytes_allocated
        .saturating_sub(stats.bytes_deallocated);
    let line = format!(
        "Client state machine per connection: {} bytes inline, {} bytes of heap retained after one transaction ({} allocations in all).\n",
        std::mem::size_of::<Client>(),
        heap.saturating_sub(std::mem::size_of::<Client>()),
        stats.allocations
    );
    eprint!("{line}");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/criterion");
    let _ = std::fs::create_dir_all(dir);
    let _ = std::fs::write(format!("{dir}/memory.txt"), line);
    drop(client);
}

fn body(c: &mut Criterion) {
    let inputs = [
        ("crlf-text", crlf_text(CHUNK)),
        ("lf-text", lf_text(CHUNK)),
        ("dotted-text", dotted_text(CHUNK)),
        ("8bit", eight_bit(CHUNK)),
    ];
    let mut group = c.benchmark_group("body-encoder-64KiB");
    for (name, input) in &inputs {
        group.throughput(Throughput::Bytes(input.len() as u64));
        let mut out = Vec::with_capacity(2 * CHUNK + 16);
        group.bench_with_input(BenchmarkId::new(POSTERN, name), input, |b, input| {
            b.iter(|| {
                out.clear();
                let mut enc = BodyEncoder::new(BodyConfig::default());
                enc.encode(black_box(input), &mut out).ok();
                black_box(out.len())
            })
        });
        group.bench_with_input(BenchmarkId::new("byte-loop", name), input, |b, input| {
            b.iter(|| {
                out.clear();
                let (mut start, mut cr) = (true, false);
                black_box(byte_loop_encode(
                    black_box(input),
                    &mut out,
                    &mut start,
                    &mut cr,
                ))
            })
        });
        group.bench_with_input(BenchmarkId::new("memcpy", name), input, |b, input| {
            b.iter(|| {
                out.clear();
                out.extend_from_slice(black_box(input));
                black_box(out.len())
            })
        });
    }
    group.finish();
}

/// All reply vectors concatenated (the ones every parser accepts as UTF-8
/// text, so lettre's `&str` parser can take them too).
fn vector_replies() -> Vec<u8> {
    let text = include_str!("../../vectors/smtp-replies.json");
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let items = v
        .as_array()
        .cloned()
        .or_else(|| v.get("vectors").and_then(|r| r.as_array()).cloned())
        .unwrap_or_default();
    let mut all = Vec::new();
    for it in items {
        if it.get("raw_encoding").is_some() {
            continue;
        }
        let Some(raw) = it.get("raw").and_then(|r| r.as_str()) else {
            continue;
        };
        // Only complete, well-formed replies: all three parsers must agree.
        if let Ok(Some((_, used))) =
            postern_smtp::reply::parse_one(raw.as_bytes(), Default::default())
            && used == raw.len()
            && raw
                .parse::<lettre::transport::smtp::response::Response>()
                .is_ok()
        {
            all.extend_from_slice(raw.as_bytes());
        }
    }
    all
}

fn replies(c: &mut Criterion) {
    let mut ehlo = b"250-mail.example.com Hello [192.0.2.1]\r\n".to_vec();
    for i in 0..38 {
        ehlo.extend_from_slice(format!("250-X-EXTENSION-{i:02} PARAMETER VALUE\r\n").as_bytes());
    }
    ehlo.extend_from_slice(b"250 SMTPUTF8\r\n");
    let single = b"250 2.1.5 Recipient <user@example.com> OK\r\n".to_vec();
    let vectors = vector_replies();
    let mut group = c.benchmark_group("reply-parser");
    for (name, input) in [
        ("ehlo-40-lines", ehlo),
        ("single-line", single),
        ("vectors", vectors),
    ] {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(BenchmarkId::new("postern", name), |b| {
            b.iter(|| {
                let mut p = ReplyParser::default();
                let mut rest = black_box(&input[..]);
                let mut n = 0u32;
                while !rest.is_empty() {
                    match p.parse(rest) {
                        Ok((used, reply)) => {
                            n += u32::from(reply.is_some());
                            rest = &rest[used..];
                        }
                        Err(_) => break,
                    }
                }
                black_box(n)
            })
        });
        group.bench_function(BenchmarkId::new("smtp-proto-0.2", name), |b| {
            b.iter(|| {
                let mut p = smtp_proto::response::parser::ResponseReceiver::default();
                let mut it = black_box(&input[..]).iter();
                let mut n = 0u32;
                while it.len() > 0 {
                    match p.parse(&mut it) {
                        Ok(r) => {
                            n += u32::from(r.code > 0);
                            p.reset();
                        }
                        Err(_) => break,
                    }
                }
                black_box(n)
            })
        });
        let text = String::from_utf8(input.clone()).unwrap_or_default();
        group.bench_function(BenchmarkId::new("lettre-0.11", name), |b| {
            b.iter(|| {
                // lettre parses one reply per call from a string.
                let mut rest = black_box(text.as_str());
                let mut n = 0u32;
                while !rest.is_empty() {
                    let end = reply_end(rest.as_bytes());
                    if rest[..end]
                        .parse::<lettre::transport::smtp::response::Response>()
                        .is_ok()
                    {
                        n += 1;
                    }
                    rest = &rest[end..];
                }
                black_box(n)
            })
        });
    }
    group.finish();
}

/// Where the first reply of `input` ends (after its last line), for the
/// parsers that take one reply at a time.
fn reply_end(input: &[u8]) -> usize {
    let mut at = 0;
    while at < input.len() {
        let line_end = input[at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(input.len(), |p| at + p + 2);
        let last = input.get(at + 3) != Some(&b'-');
        at = line_end;
        if last {
            break;
        }
    }
    at
}

/// The client machine alone: one transaction per iteration with canned
/// pipelined replies and a 1 KiB message, no sockets.
fn transactions(c: &mut Criterion) {
    memory_per_connection();
    use postern_smtp::{Client, ClientConfig, Envelope, Event, Mailbox, Security};
    let message = {
        let mut m =
            b"From: <a@example.com>\r\nTo: <b@example.com>\r\nSubject: bench\r\n\r\n".to_vec();
        while m.len() < 1024 {
            m.extend_from_slice(
                b"The quick brown fox jumps over the lazy dog, again and again.\r\n",
            );
        }
        m.truncate(1024 - 2);
        m.extend_from_slice(b"\r\n");
        m
    };
    let start = std::time::Instant::now();
    let config = ClientConfig::default()
        .tls(Security::Plaintext)
        .use_chunking(false);
    let mut client = Client::new(config, start);
    let _ = client.handle_input(
        start,
        b"220 mx ESMTP\r\n250-mx\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
    );
    while client.poll_transmit().is_some() {
        let n = client.poll_transmit().map_or(0, <[u8]>::len);
        client.advance_transmit(n);
    }
    while client.poll_event().is_some() {}
    assert!(client.is_ready());
    let envelope = Envelope::new(
        Mailbox::parse("a@example.com").expect("valid"),
        [Mailbox::parse("b@example.com").expect("valid")],
    );
    let mut group = c.benchmark_group("in-memory-transaction-1KiB");
    group.throughput(Throughput::Elements(1));
    group.bench_function("postern", |b| {
        b.iter(|| {
            let now = start;
            client.send_envelope(now, black_box(&envelope)).ok();
            let _ = client.handle_input(now, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go\r\n");
            let mut delivered = false;
            while let Some(ev) = client.poll_event() {
                if matches!(ev, Event::BodyWritable { .. }) {
                    client.write_body(now, &message).ok();
                    client.finish_body(now).ok();
                }
            }
            let _ = client.handle_input(now, b"250 2.0.0 Ok: queued\r\n");
            while let Some(ev) = client.poll_event() {
                delivered |= matches!(ev, Event::Delivered(_));
            }
            let n = client.poll_transmit().map_or(0, <[u8]>::len);
            client.advance_transmit(n);
            black_box(delivered)
        })
    });
    group.finish();
}

/// Short warm-up and measurement for nanosecond-scale work: criterion
/// still takes 100 samples, and the whole suite stays near ten minutes.
fn quick() -> Criterion {
    Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
}

criterion_group!(name = benches; config = quick(); targets = body, replies, transactions);
criterion_main!(benches);
