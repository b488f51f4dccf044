//! A scripted server for driving the client machine on virtual time.
//!
//! A script is a list of steps: bytes the server sends, bytes the client must
//! have sent by then, application actions, the TLS handshake, end of file, and
//! the passing of time. [`run_all`] runs a script whole, then with every server
//! step split at every position, then one byte at a time, and asserts that all
//! runs produce the same transcript (design §6).

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use postern_smtp::{Client, ClientConfig, Error, Event};

/// What the client did, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Bytes it transmitted (consecutive transmissions merged).
    Sent(Vec<u8>),
    /// An event it reported.
    Event(Box<Event>),
    /// An error an input call returned.
    InputError(Error),
}

/// An application action run at a point of the script.
pub type Action<'a> = &'a dyn Fn(&mut Client, Instant);

/// One step of a script.
pub enum Step<'a> {
    /// The server sends these bytes.
    S(&'a [u8]),
    /// The client must have transmitted exactly these bytes since the last `C`.
    C(&'a [u8]),
    /// The driver finishes the TLS handshake.
    Tls,
    /// The server closes the connection.
    Eof,
    /// Virtual time passes, then the driver calls `handle_timeout` if due.
    Wait(Duration),
    /// The application acts.
    Act(Action<'a>),
}

/// How server bytes are cut into reads.
#[derive(Clone, Copy, Debug)]
enum Cut {
    Whole,
    /// Split server step `step` at byte `at`.
    Split {
        step: usize,
        at: usize,
    },
    Bytewise,
}

struct Driver {
    client: Client,
    now: Instant,
    log: Vec<Entry>,
    wire: Vec<u8>,
}

impl Driver {
    fn drain(&mut self) {
        while let Some(bytes) = self.client.poll_transmit() {
            // Write in two pieces to exercise partial writes.
            let n = if bytes.len() > 1 {
                bytes.len() / 2
            } else {
                bytes.len()
            };
            let chunk = bytes[..n].to_vec();
            self.client.advance_transmit(n);
            self.wire.extend_from_slice(&chunk);
            match self.log.last_mut() {
                Some(Entry::Sent(prev)) => prev.extend_from_slice(&chunk),
                _ => self.log.push(Entry::Sent(chunk)),
            }
        }
        while let Some(event) = self.client.poll_event() {
            self.log.push(Entry::Event(Box::new(event)));
        }
        if let Some(deadline) = self.client.poll_timeout() {
            assert!(
                deadline > self.now,
                "deadline {deadline:?} is not after now {:?}",
                self.now
            );
        }
    }

    /// Feeds bytes; a driver stops reading once the client closed.
    fn input(&mut self, bytes: &[u8]) {
        if self.client.is_closed() {
            return;
        }
        let result = self.client.handle_input(self.now, bytes);
        self.after(result);
    }

    /// Logs the outputs, then the error an input call returned.
    fn after(&mut self, result: Result<(), Error>) {
        self.drain();
        if let Err(e) = result {
            self.log.push(Entry::InputError(e));
        }
    }
}

fn run_cut(config: &ClientConfig, script: &[Step<'_>], cut: Cut) -> Vec<Entry> {
    let start = Instant::now();
    let mut d = Driver {
        client: Client::new(config.clone(), start),
        now: start,
        log: Vec::new(),
        wire: Vec::new(),
    };
    d.drain();
    let mut server_step = 0;
    for step in script {
        match step {
            Step::S(bytes) => {
                match cut {
                    Cut::Whole => d.input(bytes),
                    Cut::Split { step, at } if step == server_step && at < bytes.len() => {
                        d.input(&bytes[..at]);
                        d.input(&bytes[at..]);
                    }
                    Cut::Split { .. } => d.input(bytes),
                    Cut::Bytewise => {
                        for b in bytes.iter() {
                            d.input(std::slice::from_ref(b));
                        }
                    }
                }
                server_step += 1;
            }
            Step::C(expected) => {
                assert_eq!(
                    String::from_utf8_lossy(&d.wire),
                    String::from_utf8_lossy(expected),
                    "client bytes ({cut:?})"
                );
                d.wire.clear();
            }
            Step::Tls => {
                d.client
                    .handle_tls_established(d.now)
                    .expect("handle_tls_established");
                d.drain();
            }
            Step::Eof if !d.client.is_closed() => {
                let result = d.client.handle_eof(d.now);
                d.after(result);
            }
            Step::Wait(dt) => {
                d.now += *dt;
                if !d.client.is_closed() {
                    let result = d.client.handle_timeout(d.now);
                    d.after(result);
                }
            }
            Step::Eof => {}
            Step::Act(action) => {
                action(&mut d.client, d.now);
                d.drain();
            }
        }
    }
    assert!(
        d.wire.is_empty(),
        "unchecked client bytes at the end: {:?}",
        String::from_utf8_lossy(&d.wire)
    );
    d.log
}

/// Runs the script whole, split at every position of every server step, and
/// one byte at a time; asserts identical transcripts and returns it.
pub fn run_all(config: &ClientConfig, script: &[Step<'_>]) -> Vec<Entry> {
    let whole = run_cut(config, script, Cut::Whole);
    let mut server_step = 0;
    for step in script {
        if let Step::S(bytes) = step {
            for at in 1..bytes.len() {
                let split = run_cut(
                    config,
                    script,
                    Cut::Split {
                        step: server_step,
                        at,
                    },
                );
                assert_eq!(split, whole, "split server step {server_step} at {at}");
            }
            server_step += 1;
        }
    }
    let bytewise = run_cut(config, script, Cut::Bytewise);
    assert_eq!(bytewise, whole, "one byte at a time");
    whole
}

/// The events of a transcript.
pub fn events(log: &[Entry]) -> Vec<Event> {
    log.iter()
        .filter_map(|e| match e {
            Entry::Event(ev) => Some((**ev).clone()),
            _ => None,
        })
        .collect()
}

/// The input errors of a transcript.
pub fn errors(log: &[Entry]) -> Vec<Error> {
    log.iter()
        .filter_map(|e| match e {
            Entry::InputError(err) => Some(err.clone()),
            _ => None,
        })
        .collect()
}

/// The last event of a transcript.
pub fn last_event(log: &[Entry]) -> Event {
    events(log).pop().expect("no event")
}
