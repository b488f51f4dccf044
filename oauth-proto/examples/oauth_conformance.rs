//! Conformance runner for token endpoint responses.
//!
//! ```text
//! cargo run -q -p postern-oauth --example oauth_conformance -- token-responses < FILE.json
//! ```
//!
//! Reads a JSON array of objects with `raw_http` (a string: the exact HTTP/1.1
//! response; `response.raw_http` is read too, and a document with a
//! `token_endpoint_responses` array is accepted whole) and prints a JSON array,
//! same order, of `{"outcome", "error", "ms_error_codes", "retryable",
//! "retry_after_secs", "expires_in_secs", "refresh_token", "token_type",
//! "diagnose"}`. The refresh token is printed because comparing it is the
//! point of a conformance run; feed it test data, not live responses.

#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, dead_code)]

use std::io::{Read, Write};

use postern_oauth::{Outcome, ResponseParser, classify};
use serde_json::{Value, json};

/// Runs `token-responses` over a JSON document.
pub(crate) fn token_responses(input: &str) -> Result<Value, String> {
    let doc: Value = serde_json::from_str(input).map_err(|e| format!("input is not JSON: {e}"))?;
    let cases = match &doc {
        Value::Array(a) => a,
        Value::Object(o) => match o.get("token_endpoint_responses") {
            Some(Value::Array(a)) => a,
            _ => return Err(
                "expected a JSON array (or an object with a \"token_endpoint_responses\" array)"
                    .into(),
            ),
        },
        _ => return Err("expected a JSON array".into()),
    };
    let mut out = Vec::with_capacity(cases.len());
    for (i, case) in cases.iter().enumerate() {
        let raw = case
            .get("raw_http")
            .or_else(|| case.get("response").and_then(|r| r.get("raw_http")))
            .and_then(Value::as_str)
            .ok_or_else(|| format!("element {i} has no string \"raw_http\""))?;
        out.push(result(raw.as_bytes()));
    }
    Ok(Value::Array(out))
}

/// The classification of one raw response.
pub(crate) fn result(raw: &[u8]) -> Value {
    let mut parser = ResponseParser::default();
    let response = match parser.push(raw) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => parser.finish(),
        Err(e) => Err(e),
    };
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            return json!({
                "outcome": "protocol_error", "error": e.to_string(), "ms_error_codes": [],
                "retryable": false, "retry_after_secs": null, "expires_in_secs": null,
                "refresh_token": null, "token_type": null, "diagnose": null,
            });
        }
    };
    let mut v = json!({
        "outcome": null, "error": null, "ms_error_codes": [], "retryable": false,
        "retry_after_secs": null, "expires_in_secs": null, "refresh_token": null,
        "token_type": null, "diagnose": null,
    });
    let oauth = |v: &mut Value, e: &postern_oauth::OAuthError| {
        v["error"] = json!(e.error);
        v["ms_error_codes"] = json!(e.error_codes);
        v["diagnose"] = json!(e.diagnosis().map(|d| d.id));
    };
    match classify(&response, None) {
        Outcome::Token(t) => {
            v["outcome"] = json!("token");
            v["expires_in_secs"] = json!(t.expires_in.map(|d| d.as_secs()));
            v["refresh_token"] = json!(t.refresh_token.as_ref().map(|s| s.expose()));
            v["token_type"] = json!(t.token_type);
        }
        Outcome::OAuthError(e) => {
            v["outcome"] = json!("oauth_error");
            oauth(&mut v, &e);
            v["retryable"] = json!(e.retryable());
        }
        Outcome::Retry { after, error, .. } => {
            v["outcome"] = json!("retry");
            if let Some(e) = &error {
                oauth(&mut v, e);
            }
            v["retryable"] = json!(true);
            v["retry_after_secs"] = json!(after.map(|d| d.as_secs()));
        }
        Outcome::PollAgain { slow_down } => {
            v["outcome"] = json!("poll_again");
            v["error"] = json!(if slow_down {
                "slow_down"
            } else {
                "authorization_pending"
            });
            v["retryable"] = json!(true);
        }
        Outcome::ProtocolError(p) => {
            v["outcome"] = json!("protocol_error");
            v["error"] = json!(p.to_string());
            v["diagnose"] = json!(p.diagnosis.map(|d| d.id));
        }
        _ => v["outcome"] = json!("unknown"),
    }
    v
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    if mode != "token-responses" {
        eprintln!("usage: conformance token-responses < FILE.json");
        std::process::exit(2);
    }
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("reading standard input: {e}");
        std::process::exit(2);
    }
    match token_responses(&input) {
        Ok(v) => {
            if let Err(e) = writeln!(std::io::stdout(), "{v:#}") {
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
