//! Inputs shared by postern's benchmarks: the same bytes for every contender.

#![forbid(unsafe_code)]

pub mod workloads;

/// `len` bytes of 76-column text with CRLF line ends.
#[must_use]
pub fn crlf_text(len: usize) -> Vec<u8> {
    text(len, b"\r\n")
}

/// `len` bytes of 76-column text with bare LF line ends (every one needs a CR).
#[must_use]
pub fn lf_text(len: usize) -> Vec<u8> {
    text(len, b"\n")
}

/// `len` bytes of 76-column CRLF text where every seventh line starts with a
/// dot (each one is stuffed), as in quoted replies and logs.
#[must_use]
pub fn dotted_text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 80);
    for (n, line) in crlf_text(len).split_inclusive(|b| *b == b'\n').enumerate() {
        if n % 7 == 0 {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out.truncate(len);
    out
}

fn text(len: usize, eol: &[u8]) -> Vec<u8> {
    const WORDS: &[&[u8]] = &[
        b"lorem",
        b"ipsum",
        b"dolor",
        b"sit",
        b"amet",
        b"consectetur",
        b"adipiscing",
        b"elit",
        b"sed",
        b"do",
        b"eiusmod",
        b"tempor",
        b"incididunt",
        b"ut",
        b"labore",
        b"et",
        b"dolore",
        b"magna",
    ];
    let mut out = Vec::with_capacity(len + 80);
    let mut line = 0usize;
    let mut w = 0usize;
    while out.len() < len {
        let word = WORDS[w % WORDS.len()];
        w += 1;
        if line + word.len() + 1 > 76 {
            out.extend_from_slice(eol);
            line = 0;
        }
        if line > 0 {
            out.push(b' ');
            line += 1;
        }
        out.extend_from_slice(word);
        line += word.len();
    }
    out.truncate(len);
    out
}

/// `len` bytes of 8-bit data with CRLF every 76 bytes (a quoted-printable-free
/// 8BITMIME body: Latin-1 and UTF-8 text, some control bytes, no NUL).
#[must_use]
pub fn eight_bit(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut state: u32 = 0x9e37_79b9;
    while out.len() < len {
        for _ in 0..76 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let b = (state >> 24) as u8;
            // No CR, LF or NUL inside the line: those are line structure.
            out.push(if matches!(b, 0 | b'\r' | b'\n') {
                b'x'
            } else {
                b
            });
        }
        out.extend_from_slice(b"\r\n");
    }
    out.truncate(len);
    out
}

/// A byte-at-a-time encoder: the algorithm lettre 0.11 and mail-send use (their
/// codecs are private), with the same output as postern's encoder for DATA.
#[must_use]
pub fn byte_loop_encode(
    input: &[u8],
    out: &mut Vec<u8>,
    at_line_start: &mut bool,
    prev_cr: &mut bool,
) -> usize {
    let start = out.len();
    for &b in input {
        match b {
            b'\n' if !*prev_cr => out.extend_from_slice(b"\r\n"),
            b'\n' => out.push(b'\n'),
            b'.' if *at_line_start => out.extend_from_slice(b".."),
            _ => {
                if *prev_cr {
                    out.push(b'\n');
                }
                out.push(b);
            }
        }
        *at_line_start = b == b'\n';
        *prev_cr = b == b'\r';
    }
    out.len() - start
}

/// A token cache holding a fresh one-hour token (1,500 bytes, the size of
/// an Entra JWT), and an instant one second after it was stored: the warm
/// lookup every send makes.
#[must_use]
pub fn warm_token_cache() -> (postern_oauth::TokenCache, std::time::Instant) {
    use postern_oauth::{CacheConfig, Secret, TokenCache, TokenResponse};
    use std::time::{Duration, Instant};
    let t0 = Instant::now();
    let mut cache = TokenCache::new(CacheConfig::default(), None);
    if let Some(fetch) = cache.lookup(t0).fetch {
        cache.handle_token(
            t0,
            fetch,
            TokenResponse::bearer(
                Secret::new("x".repeat(1500)),
                Some(Duration::from_secs(3600)),
            ),
        );
    }
    (cache, t0 + Duration::from_secs(1))
}
