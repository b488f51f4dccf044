//! Postfix's `smtp-sink`, a real SMTP server that accepts and discards mail.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `smtp-sink` on loopback; killed when dropped.
pub struct SmtpSink {
    child: Child,
    port: u16,
}

/// Where Debian's `postfix` package installs it.
pub const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

impl SmtpSink {
    /// Starts `smtp-sink` on a free loopback port. `None` when it is not
    /// installed and the real-peer run was not requested
    /// (`POSTERN_REAL_PEERS` unset); with `POSTERN_REAL_PEERS=1` a missing
    /// binary is an error, so CI cannot silently skip.
    pub fn start() -> Result<Option<SmtpSink>, String> {
        let required = std::env::var_os("POSTERN_REAL_PEERS").is_some_and(|v| v == "1");
        if !Path::new(SMTP_SINK).exists() {
            return if required {
                Err(format!(
                    "{SMTP_SINK} is missing (install the postfix package)"
                ))
            } else {
                Ok(None)
            };
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let mut cmd = Command::new(SMTP_SINK);
        // -c: count; -u: the user to run as when started as root; backlog 256.
        if is_root() {
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd
            .args(["-c", &format!("127.0.0.1:{port}"), "256"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {SMTP_SINK}: {e}"))?;
        let mut sink = SmtpSink { child, port };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > Duration::from_secs(10) {
                return Err("smtp-sink did not start listening".to_owned());
            }
            if let Ok(Some(status)) = sink.child.try_wait() {
                return Err(format!("smtp-sink exited: {status}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(sink))
    }

    /// Its port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
