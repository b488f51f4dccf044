//! Token path: cached token lookup latency and token response parsing plus
//! classification throughput.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use postern_oauth::{ResponseParser, classify};

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nCache-Control: no-store, no-cache\r\nPragma: no-cache\r\n\
Content-Type: application/json; charset=utf-8\r\nx-ms-request-id: 6542baa1-c678-4c37-a972-673cf275f200\r\n\
Date: Wed, 17 Mar 2021 03:14:57 GMT\r\nContent-Length: 218\r\n\r\n\
{\"token_type\":\"Bearer\",\"expires_in\":3599,\"ext_expires_in\":3599,\"access_token\":\"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsIng1dCI6Ik1uQ19WWmNBVGZNNXBP.eyJhdWQiOiJodHRwczovL291dGxvb2sub2ZmaWNlMzY1LmNvbSJ9.sig-sig-sig-sig-sig\"}";

fn token(c: &mut Criterion) {
    let mut group = c.benchmark_group("token");
    group.throughput(Throughput::Bytes(RESPONSE.len() as u64));
    group.bench_function("parse-and-classify", |b| {
        b.iter(|| {
            let mut p = ResponseParser::default();
            let resp = p.push(black_box(RESPONSE)).ok().flatten();
            black_box(resp.map(|r| classify(&r, None)))
        })
    });
    group.throughput(Throughput::Elements(1));
    let (mut cache, now) = postern_benches::warm_token_cache();
    group.bench_function("cached-lookup", |b| {
        b.iter(|| black_box(cache.lookup(black_box(now)).token.is_some()))
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

criterion_group!(name = benches; config = quick(); targets = token);
criterion_main!(benches);
