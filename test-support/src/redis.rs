//! A `redis-server` of the test's own on a free loopback port (the Debian
//! package, installed by `tests/peers/install.sh`), persisting every write
//! (AOF, `appendfsync always`): a store holding rotated refresh tokens must
//! survive its own restart.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`; stopped and its directory removed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    fsync: &'static str,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one, or `None` when `redis-server` is not installed and
    /// `POSTERN_REAL_PEERS` is not `1` (CI sets it, so it cannot be skipped
    /// there).
    ///
    /// # Panics
    /// When it does not answer `PING` within 10 s, or is missing under
    /// `POSTERN_REAL_PEERS=1`.
    #[must_use]
    pub fn start() -> Option<RedisServer> {
        Self::start_with_fsync("always")
    }

    /// [`Self::start`] with another `appendfsync` policy (`everysec`: an
    /// fsync a second, what Redis uses by default with AOF).
    #[must_use]
    pub fn start_with_fsync(fsync: &'static str) -> Option<RedisServer> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            let required = std::env::var_os("POSTERN_REAL_PEERS").is_some_and(|v| v == "1");
            assert!(
                !required,
                "redis-server is missing: run tests/peers/install.sh"
            );
            eprintln!("redis-server not installed (tests/peers/install.sh): skipped");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("postern-redis-{}-{port}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let mut r = RedisServer {
            port,
            fsync,
            dir,
            child: None,
        };
        r.restart();
        Some(r)
    }

    /// Starts it again on the same port and directory (after [`Self::kill`]).
    ///
    /// # Panics
    /// When it does not answer within 10 s.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                self.fsync,
                "--dir",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.write_all(b"PING\r\n");
                let mut line = String::new();
                if BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("+PONG") {
                    return;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
