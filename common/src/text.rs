//! Text from a peer, made safe for a terminal or a log.
//!
//! A server reply, a token endpoint's `error_description` or a token claim
//! is text chosen by someone else. Printed as is, an ANSI escape can rewrite
//! the admin's screen, a BEL rings, a NUL or CR hides what came before, and a
//! bidi override (U+202E) makes `moc.elpmaxe` read as `example.com`.

/// How many characters of one peer-supplied text are shown by default.
pub const SHOWN_CHARS: usize = 1000;

/// `text` for a terminal or a log: control characters (C0, DEL, C1, so also
/// CR, LF and TAB), bidi controls and other invisible format characters are
/// written as escapes (`\x1b`, `\u{202e}`); the result holds at most `max`
/// characters, then `…` when the text was cut.
#[must_use]
pub fn sanitize(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 8);
    let mut shown = 0;
    for c in text.chars() {
        let escaped = (c.is_control() || is_invisible_format(c)).then(|| {
            let n = u32::from(c);
            if n < 0x80 {
                format!("\\x{n:02x}")
            } else {
                format!("\\u{{{n:x}}}")
            }
        });
        let width = escaped.as_ref().map_or(1, String::len);
        if shown + width > max {
            out.push('…');
            break;
        }
        shown += width;
        match escaped {
            Some(e) => out.push_str(&e),
            None => out.push(c),
        }
    }
    out
}

/// [`sanitize`] of bytes that should be UTF-8 (invalid sequences become
/// U+FFFD first).
#[must_use]
pub fn sanitize_bytes(bytes: &[u8], max: usize) -> String {
    sanitize(&String::from_utf8_lossy(bytes), max)
}

/// Unicode format characters (category Cf) and the other invisible
/// characters that change how text around them reads: bidi embeddings,
/// overrides, isolates and marks, zero-width characters, the BOM, tags.
fn is_invisible_format(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x034F
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_escaped_and_bounded() {
        let hostile = "ok\x1b[2J\x07\0\r\n\u{202e}moc.elpmaxe\u{200b}\u{2066}x\u{85}";
        let shown = sanitize(hostile, 100);
        assert_eq!(
            shown,
            "ok\\x1b[2J\\x07\\x00\\x0d\\x0a\\u{202e}moc.elpmaxe\\u{200b}\\u{2066}x\\u{85}"
        );
        assert!(
            !shown
                .chars()
                .any(|c| c.is_control() || is_invisible_format(c))
        );
        assert_eq!(sanitize("abcdef", 3), "abc…");
        // The bound is on what is shown, escapes included.
        assert_eq!(sanitize("\x07\x07\x07", 9), "\\x07\\x07…");
        assert_eq!(
            sanitize("j\u{f6}ran \u{65e5}\u{672c}", 100),
            "j\u{f6}ran \u{65e5}\u{672c}"
        );
        assert_eq!(sanitize_bytes(b"a\xffb", 10), "a\u{fffd}b");
    }
}
