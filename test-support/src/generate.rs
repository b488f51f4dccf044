//! A message of any size, produced as it is read: constant memory.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::Fnv;

const HEADER: &[u8] =
    b"From: <big@example.com>\r\nTo: <sink@example.com>\r\nSubject: generated\r\n\r\n";
const TEXT: &[u8] = b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?-+*/=";

/// A CRLF message of exactly `size` bytes (at least the header): 78-byte
/// lines, every seventh starting with a dot (so dot-stuffing is exercised),
/// ending with CRLF.
#[derive(Clone, Debug)]
pub struct Generated {
    size: u64,
    pos: u64,
}

impl Generated {
    /// A message of `size` bytes.
    #[must_use]
    pub fn new(size: u64) -> Self {
        Generated {
            size: size.max(HEADER.len() as u64 + 2),
            pos: 0,
        }
    }

    /// The byte at offset `i`: the definition the fast [`Self::fill`] must
    /// agree with (checked by a unit test).
    #[cfg(test)]
    fn byte(&self, i: u64) -> u8 {
        let h = HEADER.len() as u64;
        if i < h {
            return HEADER[usize::try_from(i).unwrap_or(0)];
        }
        // The last two bytes are always CRLF.
        if i == self.size - 2 {
            return b'\r';
        }
        if i == self.size - 1 {
            return b'\n';
        }
        let body = i - h;
        let line = body / 78;
        let col = usize::try_from(body % 78).unwrap_or(0);
        template_byte(line, col)
    }

    /// Fills `buf` from the current position; returns the count. Copies from
    /// the periodic body template, so it runs at memcpy speed.
    fn fill(&mut self, buf: &mut [u8]) -> usize {
        let n = usize::try_from((self.size - self.pos).min(buf.len() as u64)).unwrap_or(buf.len());
        let out = &mut buf[..n];
        let h = HEADER.len() as u64;
        let mut done = 0;
        while done < n {
            let at = self.pos + done as u64;
            let rest = &mut out[done..];
            let copied = if at < h {
                let from = usize::try_from(at).unwrap_or(0);
                let take = rest.len().min(HEADER.len() - from);
                rest[..take].copy_from_slice(&HEADER[from..from + take]);
                take
            } else {
                let t = template();
                let from = usize::try_from((at - h) % t.len() as u64).unwrap_or(0);
                let take = rest.len().min(t.len() - from);
                rest[..take].copy_from_slice(&t[from..from + take]);
                take
            };
            done += copied;
        }
        // The last two bytes of the message are CRLF whatever the template says.
        for at in self.size - 2..self.size {
            if let Some(k) = at
                .checked_sub(self.pos)
                .and_then(|k| usize::try_from(k).ok())
                && k < n
            {
                out[k] = if at == self.size - 2 { b'\r' } else { b'\n' };
            }
        }
        self.pos += n as u64;
        n
    }

    /// Size and FNV-1a digest of the whole message (what the server must
    /// receive after un-stuffing).
    #[must_use]
    pub fn expected(&self) -> (u64, u64) {
        let mut g = Generated::new(self.size);
        let mut h = Fnv::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = g.fill(&mut buf);
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        (self.size, h.finish())
    }
}

/// Lines in one period of the body: the dot repeats every 7 lines, the text
/// rotation every 13.
const PERIOD_LINES: u64 = 7 * 13;

/// Byte `col` of body line `line`: 78-byte lines, every seventh starting with
/// a dot.
fn template_byte(line: u64, col: usize) -> u8 {
    match col {
        76 => b'\r',
        77 => b'\n',
        0 if line.is_multiple_of(7) => b'.',
        _ => TEXT[(col + usize::try_from(line % 13).unwrap_or(0)) % TEXT.len()],
    }
}

/// One period of the body (91 lines of 78 bytes), built once.
fn template() -> &'static [u8] {
    static TEMPLATE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TEMPLATE.get_or_init(|| {
        (0..PERIOD_LINES)
            .flat_map(|line| (0..78).map(move |col| template_byte(line, col)))
            .collect()
    })
}

impl futures_io::AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(self.fill(buf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The template copy agrees with the per-byte definition, at odd read
    /// sizes that cross the header, the period and the final CRLF.
    #[test]
    fn fill_matches_the_definition() {
        for size in [0u64, 80, 81, 500, 7_098 * 3 + 17, 100_003] {
            for chunk in [1usize, 7, 78, 4096, 65_536] {
                let mut g = Generated::new(size);
                let reference = Generated::new(size);
                let mut buf = vec![0u8; chunk];
                let mut at = 0u64;
                loop {
                    let n = g.fill(&mut buf);
                    if n == 0 {
                        break;
                    }
                    for (k, b) in buf[..n].iter().enumerate() {
                        assert_eq!(
                            *b,
                            reference.byte(at + k as u64),
                            "size {size} offset {}",
                            at + k as u64
                        );
                    }
                    at += n as u64;
                }
                assert_eq!(at, reference.size);
            }
        }
    }
}
