//! The message content after DATA, read as a stream: dot-stuffing undone,
//! the end found, lines measured, in constant memory.
//!
//! Only `CRLF . CRLF` ends the content (RFC 5321 §4.1.1.4): a bare LF is
//! content, so `LF . LF` or `CR . CR` can never end a message early (the
//! "SMTP smuggling" class of 2023). A line that begins with a dot loses that
//! dot when anything other than CRLF follows it (§4.5.2). Line ends are
//! passed through as sent; the relay canonicalises them when it re-encodes.

/// Where the decoder is within a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    /// After CRLF (or at the start of the content).
    LineStart,
    /// After a dot at the start of a line.
    Dot,
    /// After `.` CR at the start of a line.
    DotCr,
    /// Inside a line.
    Inside,
}

/// The streaming decoder of DATA content.
#[derive(Clone, Debug)]
pub(crate) struct DataDecoder {
    at: At,
    /// The last byte written was CR.
    cr: bool,
    /// Octets of the current line on the wire, without its line end.
    line: usize,
    /// The longest line allowed, in octets without CRLF.
    max_line: usize,
    /// Octets of content, un-stuffed, line ends included.
    pub size: u64,
    /// A line longer than `max_line` was seen.
    pub long_line: bool,
    /// A NUL byte was seen.
    pub nul: bool,
}

impl DataDecoder {
    /// A decoder for lines of at most `max_line` octets (without CRLF).
    pub(crate) fn new(max_line: usize) -> Self {
        DataDecoder {
            at: At::LineStart,
            cr: false,
            line: 0,
            max_line,
            size: 0,
            long_line: false,
            nul: false,
        }
    }

    /// Decodes `input` into `out`. Returns how many bytes it took and
    /// whether the end of the content was among them (the bytes after the
    /// end are not taken). `out` grows by at most `input.len()` bytes.
    pub(crate) fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            match self.at {
                At::LineStart => {
                    if input[i] == b'.' {
                        self.at = At::Dot;
                        self.line = 1;
                        i += 1;
                    } else {
                        self.at = At::Inside;
                    }
                }
                At::Dot => {
                    if input[i] == b'\r' {
                        self.at = At::DotCr;
                        i += 1;
                    } else {
                        // A stuffed dot: dropped.
                        self.at = At::Inside;
                    }
                }
                At::DotCr => {
                    if input[i] == b'\n' {
                        return (i + 1, true);
                    }
                    // `.` CR then something else: the dot was stuffing, the
                    // CR is content.
                    self.emit(b"\r", out);
                    self.line += 1;
                    self.at = At::Inside;
                }
                At::Inside => {
                    let rest = &input[i..];
                    match memchr::memchr(b'\n', rest) {
                        None => {
                            self.emit(rest, out);
                            self.line += rest.len();
                            i = input.len();
                        }
                        Some(lf) => {
                            let stretch = &rest[..lf];
                            let crlf = match stretch.last() {
                                Some(&b) => b == b'\r',
                                None => self.cr,
                            };
                            self.emit(stretch, out);
                            self.line += lf;
                            if self.line - usize::from(crlf) > self.max_line {
                                self.long_line = true;
                            }
                            self.emit(b"\n", out);
                            self.line = 0;
                            self.at = if crlf { At::LineStart } else { At::Inside };
                            i += lf + 1;
                        }
                    }
                    if self.line > self.max_line + 1 {
                        self.long_line = true;
                    }
                }
            }
        }
        (i, false)
    }

    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if let Some(&last) = bytes.last() {
            if !self.nul && memchr::memchr(0, bytes).is_some() {
                self.nul = true;
            }
            out.extend_from_slice(bytes);
            self.size += bytes.len() as u64;
            self.cr = last == b'\r';
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` whole, then split at every position, then one byte
    /// at a time: the same content and the same end each way.
    fn decode_all(wire: &[u8]) -> (Vec<u8>, Option<usize>, bool) {
        let whole = {
            let mut d = DataDecoder::new(998);
            let mut out = Vec::new();
            let (used, end) = d.decode(wire, &mut out);
            (out, end.then_some(used), d.long_line)
        };
        let pieces = |cuts: &[usize]| {
            let mut d = DataDecoder::new(998);
            let mut out = Vec::new();
            let mut at = 0;
            let mut end = None;
            for &cut in cuts.iter().chain(std::iter::once(&wire.len())) {
                if end.is_some() || cut < at {
                    continue;
                }
                let (used, done) = d.decode(&wire[at..cut], &mut out);
                if done {
                    end = Some(at + used);
                }
                at += used;
            }
            (out, end, d.long_line)
        };
        for cut in 0..=wire.len() {
            assert_eq!(pieces(&[cut]), whole, "split at {cut} of {wire:?}");
        }
        let bytes: Vec<usize> = (0..=wire.len()).collect();
        assert_eq!(pieces(&bytes), whole, "one byte at a time: {wire:?}");
        whole
    }

    #[test]
    fn end_and_unstuffing() {
        let (out, end, _) = decode_all(b"Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n");
        assert_eq!(out, b"Subject: x\r\n\r\n.dot\r\n");
        assert_eq!(end, Some(24));
        let (out, end, _) = decode_all(b".\r\n");
        assert_eq!((out.as_slice(), end), (&b""[..], Some(3)));
        let (out, end, _) = decode_all(b".x\r\n.\r\n");
        assert_eq!((out.as_slice(), end), (&b"x\r\n"[..], Some(7)));
    }

    #[test]
    fn only_crlf_dot_crlf_ends() {
        for wire in [
            &b"a\n.\nb\r\n"[..],
            b"a\r.\rb\r\n",
            b"a\n.\r\nb\r\n",
            b"a\r\n.\nb\r\n",
            b"a\r\n.\rb\r\n",
        ] {
            let (_, end, _) = decode_all(wire);
            assert_eq!(end, None, "{wire:?} must not end the content");
        }
        let (out, _, _) = decode_all(b"a\n.\nb\r\n");
        assert_eq!(out, b"a\n.\nb\r\n", "a dot after a bare LF stays");
        let (out, _, _) = decode_all(b"a\r\n.\rb\r\n");
        assert_eq!(out, b"a\r\n\rb\r\n", "`.` CR x loses its stuffing dot");
    }

    #[test]
    fn long_lines_and_nul() {
        let mut wire = vec![b'x'; 998];
        wire.extend_from_slice(b"\r\n.\r\n");
        assert!(!decode_all(&wire).2, "998 octets is the limit, not over it");
        let mut wire = vec![b'x'; 999];
        wire.extend_from_slice(b"\r\n.\r\n");
        assert!(decode_all(&wire).2);
        let mut wire = vec![b'x'; 2000];
        wire.extend_from_slice(b"\n.\r\n");
        assert!(decode_all(&wire).2);
        let mut d = DataDecoder::new(998);
        let mut out = Vec::new();
        d.decode(b"a\0b\r\n", &mut out);
        assert!(d.nul);
        assert_eq!(d.size, 5);
    }
}
