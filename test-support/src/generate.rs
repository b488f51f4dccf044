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

    /// The byte at offset `i`.
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
        match col {
            76 => b'\r',
            77 => b'\n',
            0 if line.is_multiple_of(7) => b'.',
            _ => TEXT[(col + usize::try_from(line % 13).unwrap_or(0)) % TEXT.len()],
        }
    }

    /// Fills `buf` from the current position; returns the count.
    fn fill(&mut self, buf: &mut [u8]) -> usize {
        let n = usize::try_from((self.size - self.pos).min(buf.len() as u64)).unwrap_or(buf.len());
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = self.byte(self.pos + k as u64);
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

impl futures_io::AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(self.fill(buf)))
    }
}
