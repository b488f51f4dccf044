//! Helpers the command-line test binaries share.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;

/// A GET on loopback, as a browser following a redirect would make it; the
/// `Location` of the answer.
pub(crate) fn get_location(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_at(rest.find('/')?);
    let mut s = TcpStream::connect(authority).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    response
        .lines()
        .find_map(|l| l.strip_prefix("Location: ").map(str::to_owned))
}
