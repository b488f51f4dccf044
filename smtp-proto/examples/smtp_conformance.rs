//! Conformance runner for other implementations and test suites.
//!
//! ```text
//! cargo run -q -p postern-smtp --example smtp_conformance -- replies < smtp-replies.json
//! cargo run -q -p postern-smtp --example smtp_conformance -- body < message.eml
//! ```
//!
//! `replies` reads a JSON array of objects with `raw` (a string; bytes as
//! Latin-1 code points when `raw_encoding` is `"latin1"`) and prints a JSON
//! array, same order, of `{"code","enhanced","lines","error"}` for the first
//! reply in each `raw`. `body` reads a message and prints the exact bytes that
//! go on the wire after `354` (stuffed body and terminator), or exits 1 with
//! the error on stderr.

#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, dead_code)]

use std::io::{Read, Write};

use postern_smtp::{BodyConfig, ReplyLimits, ReplyParser, body::reference_encode};
use serde_json::{Value, json};

/// Runs `replies` over a JSON document.
pub(crate) fn replies(input: &str) -> Result<Value, String> {
    let doc: Value = serde_json::from_str(input).map_err(|e| format!("input is not JSON: {e}"))?;
    let cases = match &doc {
        Value::Array(a) => a,
        Value::Object(o) => match o.get("vectors") {
            Some(Value::Array(a)) => a,
            _ => {
                return Err("expected a JSON array (or an object with a \"vectors\" array)".into());
            }
        },
        _ => return Err("expected a JSON array".into()),
    };
    let mut out = Vec::with_capacity(cases.len());
    for (i, case) in cases.iter().enumerate() {
        let raw = case
            .get("raw")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("element {i} has no string \"raw\""))?;
        let latin1 = case.get("raw_encoding").and_then(Value::as_str) == Some("latin1");
        let bytes: Vec<u8> = if latin1 {
            raw.chars()
                .map(|c| {
                    u8::try_from(u32::from(c))
                        .map_err(|_| format!("element {i}: {c:?} is not Latin-1"))
                })
                .collect::<Result<_, _>>()?
        } else {
            raw.as_bytes().to_vec()
        };
        out.push(reply_result(&bytes, latin1));
    }
    Ok(Value::Array(out))
}

fn reply_result(bytes: &[u8], latin1: bool) -> Value {
    let text = |line: &[u8]| -> String {
        if latin1 {
            line.iter().map(|&b| char::from(b)).collect()
        } else {
            String::from_utf8_lossy(line).into_owned()
        }
    };
    match ReplyParser::new(ReplyLimits::default()).parse(bytes) {
        Ok((_, Some(reply))) => json!({
            "code": reply.code(),
            "enhanced": reply.enhanced().map(|e| e.to_string()),
            "lines": reply.lines().map(text).collect::<Vec<_>>(),
            "error": null,
        }),
        Ok((_, None)) => json!({
            "code": null, "enhanced": null, "lines": null,
            "error": "incomplete reply: the input ends before the last line",
        }),
        Err(e) => json!({"code": null, "enhanced": null, "lines": null, "error": e.to_string()}),
    }
}

/// Runs `body` over a message: the DATA bytes after `354`.
pub(crate) fn body(input: &[u8]) -> Result<Vec<u8>, String> {
    reference_encode(input, BodyConfig::default())
        .map(|(out, _)| out)
        .map_err(|e| e.to_string())?;
    // The streaming encoder is what the client uses; it must agree with the
    // reference, and is what is printed.
    let mut enc = postern_smtp::BodyEncoder::new(BodyConfig::default());
    let mut out = Vec::with_capacity(input.len() + 5);
    for chunk in input.chunks(64 * 1024) {
        enc.encode(chunk, &mut out).map_err(|e| e.to_string())?;
    }
    enc.finish(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("reading standard input: {e}");
        std::process::exit(2);
    }
    let result = match mode.as_str() {
        "replies" => String::from_utf8(input)
            .map_err(|_| "input is not UTF-8".to_string())
            .and_then(|s| replies(&s))
            .map(|v| format!("{v:#}\n").into_bytes()),
        "body" => body(&input),
        _ => {
            eprintln!("usage: conformance replies < FILE.json | conformance body < MESSAGE");
            std::process::exit(2);
        }
    };
    match result {
        Ok(bytes) => {
            if let Err(e) = std::io::stdout().write_all(&bytes) {
                eprintln!("writing standard output: {e}");
                std::process::exit(2);
            }
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
