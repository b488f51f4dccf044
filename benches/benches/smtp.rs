//! Body encoder and reply parser throughput.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use postern_benches::{byte_loop_encode, crlf_text, eight_bit, lf_text};
use postern_smtp::{BodyConfig, BodyEncoder, ReplyParser};
use std::hint::black_box;

const CHUNK: usize = 64 * 1024;

fn body(c: &mut Criterion) {
    let inputs = [
        ("crlf-text", crlf_text(CHUNK)),
        ("lf-text", lf_text(CHUNK)),
        ("8bit", eight_bit(CHUNK)),
    ];
    let mut group = c.benchmark_group("body-encoder-64KiB");
    for (name, input) in &inputs {
        group.throughput(Throughput::Bytes(input.len() as u64));
        let mut out = Vec::with_capacity(2 * CHUNK + 16);
        group.bench_with_input(BenchmarkId::new("postern", name), input, |b, input| {
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

fn replies(c: &mut Criterion) {
    let mut ehlo = b"250-mail.example.com Hello [192.0.2.1]\r\n".to_vec();
    for i in 0..38 {
        ehlo.extend_from_slice(format!("250-X-EXTENSION-{i:02} PARAMETER VALUE\r\n").as_bytes());
    }
    ehlo.extend_from_slice(b"250 SMTPUTF8\r\n");
    let single = b"250 2.1.5 Recipient <user@example.com> OK\r\n".to_vec();
    let mut group = c.benchmark_group("reply-parser");
    for (name, input) in [("ehlo-40-lines", ehlo), ("single-line", single)] {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(BenchmarkId::new("postern", name), |b| {
            b.iter(|| {
                let mut p = ReplyParser::default();
                let (_, reply) = p.parse(black_box(&input)).unwrap_or((0, None));
                black_box(reply.map(|r| r.code()))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, body, replies);
criterion_main!(benches);
