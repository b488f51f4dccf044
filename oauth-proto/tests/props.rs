//! Property tests: the HTTP response parser never panics and stays bounded on
//! arbitrary bytes in arbitrary chunks; any response split anywhere parses as
//! it does whole; classification never panics; the form codec round-trips.

use postern_oauth::{HttpLimits, ResponseParser, classify, form, parse_redirect};
use proptest::prelude::*;

fn feed(
    raw: &[u8],
    cuts: &[usize],
) -> Result<postern_oauth::HttpResponse, postern_oauth::HttpError> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (raw.len() + 1)).collect();
    points.sort_unstable();
    let mut p = ResponseParser::new(
        HttpLimits::default()
            .max_head(512)
            .max_headers(8)
            .max_body(1024),
    );
    let mut at = 0;
    for cut in points.into_iter().chain([raw.len()]) {
        if let Some(r) = p.push(&raw[at..cut])? {
            return Ok(r);
        }
        at = cut;
    }
    p.finish()
}

fn response() -> impl Strategy<Value = Vec<u8>> {
    let status = prop::sample::select(vec![200u16, 400, 401, 429, 502, 100]);
    let body = prop::collection::vec(any::<u8>(), 0..300);
    (status, body, 0u8..3, any::<bool>()).prop_map(|(status, body, framing, json)| {
        let body = if json {
            format!(
                "{{\"error\":\"invalid_grant\",\"error_codes\":[{}],\"access_token\":\"x\"}}",
                body.len()
            )
            .into_bytes()
        } else {
            body
        };
        let mut out =
            format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n").into_bytes();
        match framing {
            0 => {
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                out.extend_from_slice(&body);
            }
            1 => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for c in body.chunks(37) {
                    out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                    out.extend_from_slice(c);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
            _ => {
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&body);
            }
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..2000), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        if let Ok(r) = feed(&raw, &cuts) {
            prop_assert!(r.body.len() <= 1024);
            let _ = classify(&r, Some(0));
        }
    }

    #[test]
    fn http_looking_bytes_never_panic(
        head in "HTTP/1\\.1 [0-9]{3} [ -~]{0,20}\r\n([A-Za-z-]{1,12}: [ -~]{0,20}\r\n){0,6}\r\n",
        body in prop::collection::vec(any::<u8>(), 0..400),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut raw = head.into_bytes();
        raw.extend_from_slice(&body);
        if let Ok(r) = feed(&raw, &cuts) {
            let _ = classify(&r, None);
        }
    }

    #[test]
    fn split_anywhere_equals_whole(raw in response(), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        prop_assert_eq!(feed(&raw, &cuts), feed(&raw, &[]));
    }

    #[test]
    fn form_round_trips(s in any::<String>()) {
        let enc = form::encode(&s);
        prop_assert!(enc.bytes().all(|b| b.is_ascii_alphanumeric() || b"*-._+%".contains(&b)));
        prop_assert_eq!(form::decode(&enc), s);
    }

    #[test]
    fn redirect_parser_never_panics(s in any::<String>(), state in "[a-z]{0,4}") {
        let _ = parse_redirect(&s, &state);
    }
}
