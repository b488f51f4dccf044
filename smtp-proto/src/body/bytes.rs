//! The byte path of the encoder: one byte at a time, for the bytes the fast
//! path leaves (a bare CR or LF, a leading dot at a block edge, NUL, a
//! refused 8-bit byte, a line near the limit).

use super::{BodyEncoder, BodyError, NulBytes};

impl BodyEncoder {
    /// The byte-by-byte path over `input[i..end]` (it may go one byte past `end`
    /// to complete a CRLF pair). Returns the position where it stopped.
    pub(super) fn slow(
        &mut self,
        input: &[u8],
        mut i: usize,
        end: usize,
        out: &mut Vec<u8>,
        run: &mut usize,
    ) -> Result<usize, BodyError> {
        let offset = self.stats.input_bytes;
        while i < end {
            let b = input[i];
            if self.at_line_start {
                self.at_line_start = false;
                if b == b'.' && self.config.dot_stuffing {
                    out.extend_from_slice(&input[*run..i]);
                    out.push(b'.');
                    *run = i;
                    self.stats.dots_stuffed += 1;
                }
            }
            match b {
                b'\r' => {
                    self.end_line()?;
                    match input.get(i + 1) {
                        Some(b'\n') => i += 2,
                        Some(_) => {
                            out.extend_from_slice(&input[*run..=i]);
                            out.push(b'\n');
                            i += 1;
                            *run = i;
                            self.stats.line_ends_fixed += 1;
                        }
                        None => {
                            // The LF may come in the next chunk.
                            self.pending_cr = true;
                            return Ok(i + 1);
                        }
                    }
                    self.at_line_start = true;
                    continue;
                }
                b'\n' => {
                    self.end_line()?;
                    out.extend_from_slice(&input[*run..i]);
                    out.push(b'\r');
                    *run = i;
                    self.stats.line_ends_fixed += 1;
                    self.at_line_start = true;
                    i += 1;
                    continue;
                }
                0 => {
                    if self.config.nul == NulBytes::Reject {
                        return Err(BodyError::Nul {
                            offset: offset + i as u64,
                        });
                    }
                    self.stats.nul = true;
                }
                0x80..=0xff => {
                    if !self.config.eight_bit {
                        return Err(BodyError::EightBit {
                            offset: offset + i as u64,
                        });
                    }
                    self.stats.eight_bit = true;
                }
                _ => {}
            }
            self.line_len += 1;
            i += 1;
        }
        Ok(i)
    }
}
