//! `application/x-www-form-urlencoded` (the WHATWG byte serializer, which is
//! what RFC 6749 §2.3.1 and Appendix B mean): alphanumerics and `*-._` stay,
//! space becomes `+`, every other byte is `%XX` (upper-case hex). `~` is encoded
//! (`%7E`), as Entra secrets contain it.

/// Appends the form encoding of `value` to `out`.
pub fn encode_into(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
}

/// The form encoding of `value`.
#[must_use]
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    encode_into(value, &mut out);
    out
}

/// Serializes `pairs` as a form body: `k=v&k=v`.
#[must_use]
pub fn serialize<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        encode_into(k, &mut out);
        out.push('=');
        encode_into(v, &mut out);
    }
    out
}

/// Decodes one form-encoded component: `+` is a space, `%XX` a byte. A `%`
/// not followed by two hex digits is kept as it is (as browsers do). Bytes
/// that are not UTF-8 are replaced.
#[must_use]
pub fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(hex),
                bytes.get(i + 2).and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Parses a form body or URL query into decoded pairs, in order. Empty
/// segments (`a=1&&b=2`) are skipped; a key without `=` has an empty value.
#[must_use]
pub fn parse(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|s| !s.is_empty())
        .map(|s| match s.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(s), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_follows_the_form_serializer() {
        assert_eq!(encode("a b~c/d:e+f=*-._"), "a+b%7Ec%2Fd%3Ae%2Bf%3D*-._");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(decode("a+b%7Ec%2fd%zz%"), "a b~c/d%zz%");
        assert_eq!(
            parse("a=1&&b=x+y&c"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), String::new())
            ]
        );
        let s = "z/tZ9VwFZqApmIQ+ZH1I5pLk/uB4ud:X2/8bL+wfFTt1rFw= ~é";
        assert_eq!(decode(&encode(s)), s);
    }
}
