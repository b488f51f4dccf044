//! Shared stores: where several processes (on one host or many) keep one
//! token record per credential set and one set of counters per mailbox.
//!
//! A store offers three operations, each atomic on its own: read a value,
//! replace a value if it is still the one read (compare-and-swap), and add to
//! a counter of a time window. Everything else (who fetches, what a record
//! means, whether a message may go) is decided by the pure functions of
//! [`postern_oauth::shared`] and [`postern_smtp::limits`].
//!
//! - [`MemoryStore`]: in this process only (several transports sharing one
//!   mailbox's limits; tests).
//! - [`FileStore`]: one host, many processes: a directory, one file per key,
//!   an advisory lock per key (`flock`), atomic replace (write, `fsync`,
//!   `rename`), mode 0600 in a 0700 directory.
//! - `RedisStore` (feature `redis` of an adapter): many hosts, through the `redis` crate;
//!   compare-and-swap is a Lua script, counters are `INCRBY` + `PEXPIRE`.
//!
//! Values are at most [`MAX_VALUE`] bytes; a larger one read from a store is
//! an error.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The largest value a store hands back, in bytes.
pub const MAX_VALUE: usize = 64 * 1024;

/// What a store operation returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A failed store operation.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be reached or failed (Redis down, a file error).
    Unavailable(String),
    /// A value larger than [`MAX_VALUE`].
    TooLarge(usize),
    /// A store URL that cannot be used.
    Config(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(e) => write!(f, "the shared store is unavailable: {e}"),
            StoreError::TooLarge(n) => {
                write!(
                    f,
                    "the shared store returned {n} bytes (at most {MAX_VALUE})"
                )
            }
            StoreError::Config(e) => write!(f, "shared store: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// A store shared by processes. Implementations must make each operation
/// atomic against every other process using the same store.
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// The value of `key`, if any.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// Replaces the value of `key` with `new` (`None`: deletes it) if it is
    /// still `expected` (`None`: absent). `true` when it was replaced.
    fn swap<'a>(
        &'a self,
        key: &'a str,
        expected: Option<&'a [u8]>,
        new: Option<&'a [u8]>,
    ) -> StoreFuture<'a, bool>;

    /// Adds `n` to the counter `key` of window `window` and returns the new
    /// total (`n = 0` reads it). A later window starts from zero; an earlier
    /// one may be forgotten (0) once a later one is counted, and is after
    /// `keep`.
    fn add<'a>(&'a self, key: &'a str, window: u64, n: u64, keep: Duration)
    -> StoreFuture<'a, u64>;

    /// An operation timed out: drop any connection, so the next operation
    /// opens a fresh one. Default: nothing.
    fn reset(&self) {}
}

/// A store in this process's memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    values: Mutex<HashMap<String, Vec<u8>>>,
    counters: Mutex<HashMap<String, (u64, u64)>>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn get_now(&self, key: &str) -> Option<Vec<u8>> {
        lock(&self.values).get(key).cloned()
    }

    fn swap_now(&self, key: &str, expected: Option<&[u8]>, new: Option<&[u8]>) -> bool {
        let mut values = lock(&self.values);
        if values.get(key).map(Vec::as_slice) != expected {
            return false;
        }
        match new {
            Some(v) => values.insert(key.to_owned(), v.to_vec()),
            None => values.remove(key),
        };
        true
    }

    fn add_now(&self, key: &str, window: u64, n: u64) -> u64 {
        let mut counters = lock(&self.counters);
        let entry = counters.entry(key.to_owned()).or_insert((window, 0));
        if window < entry.0 {
            // A window already over: forgotten.
            return 0;
        }
        if window > entry.0 {
            *entry = (window, 0);
        }
        entry.1 = entry.1.saturating_add(n);
        entry.1
    }
}

impl Store for MemoryStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(std::future::ready(Ok(self.get_now(key))))
    }

    fn swap<'a>(
        &'a self,
        key: &'a str,
        expected: Option<&'a [u8]>,
        new: Option<&'a [u8]>,
    ) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(self.swap_now(key, expected, new))))
    }

    fn add<'a>(
        &'a self,
        key: &'a str,
        window: u64,
        n: u64,
        _keep: Duration,
    ) -> StoreFuture<'a, u64> {
        Box::pin(std::future::ready(Ok(self.add_now(key, window, n))))
    }
}

/// A store in a directory, for the processes of one host.
///
/// Each key is a file (its name is the key with characters outside
/// `[A-Za-z0-9._-]` replaced), guarded by an advisory lock on `NAME.lock`
/// held for one read and one atomic replace (microseconds), so the calls
/// block their thread that long at most, plus the time another process holds
/// the same lock. A process that dies holding a lock loses it with its file
/// descriptors. Counters are files of two numbers: the window and the count.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// A store in `dir`, created (mode 0700) when missing.
    ///
    /// # Errors
    /// [`StoreError::Config`] when the directory cannot be created.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&dir)
            .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
        Ok(FileStore { dir })
    }

    fn path(&self, key: &str) -> PathBuf {
        let name: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(name)
    }

    fn locked<T>(
        &self,
        key: &str,
        f: impl FnOnce(&Path) -> io::Result<T>,
    ) -> Result<T, StoreError> {
        let path = self.path(key);
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        let lock_file = open_private(Path::new(&lock_path), false).map_err(unavailable)?;
        lock_file.lock().map_err(unavailable)?;
        let result = f(&path).map_err(unavailable);
        let _ = lock_file.unlock();
        result
    }
}

fn unavailable(e: io::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn open_private(path: &Path, truncate: bool) -> io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(true).create(true).truncate(truncate);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

fn read_bounded(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = Vec::new();
    file.take(MAX_VALUE as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > MAX_VALUE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {MAX_VALUE} bytes", path.display()),
        ));
    }
    Ok(Some(buf))
}

/// Write to a temporary file, `fsync` when `durable`, rename over the
/// target.
fn replace(path: &Path, value: &[u8], durable: bool) -> io::Result<()> {
    let mut tmp = path.to_path_buf().into_os_string();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut f = open_private(&tmp, true)?;
    f.write_all(value)?;
    if durable {
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)
}

impl Store for FileStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(std::future::ready(self.locked(key, read_bounded)))
    }

    fn swap<'a>(
        &'a self,
        key: &'a str,
        expected: Option<&'a [u8]>,
        new: Option<&'a [u8]>,
    ) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(self.locked(key, |path| {
            if read_bounded(path)?.as_deref() != expected {
                return Ok(false);
            }
            match new {
                Some(v) => replace(path, v, true)?,
                None => match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                },
            }
            Ok(true)
        })))
    }

    fn add<'a>(
        &'a self,
        key: &'a str,
        window: u64,
        n: u64,
        _keep: Duration,
    ) -> StoreFuture<'a, u64> {
        Box::pin(std::future::ready(self.locked(key, |path| {
            let old = read_bounded(path)?.unwrap_or_default();
            let text = String::from_utf8_lossy(&old);
            let mut parts = text.split_whitespace().map(str::parse::<u64>);
            let count = match (parts.next(), parts.next()) {
                // A window already over: forgotten, and the file left alone.
                (Some(Ok(w)), Some(Ok(_))) if w > window => return Ok(0),
                (Some(Ok(w)), Some(Ok(c))) if w == window => c,
                _ => 0,
            }
            .saturating_add(n);
            if n == 0 {
                return Ok(count);
            }
            // A counter lost in a crash only lets a little more through in
            // its window: not worth an fsync per message.
            replace(path, format!("{window} {count}\n").as_bytes(), false)?;
            Ok(count)
        })))
    }
}

/// A store in Redis, for processes on many hosts.
#[cfg(any(feature = "redis-tokio", feature = "redis-smol"))]
pub use self::redis_store::RedisStore;

#[cfg(any(feature = "redis-tokio", feature = "redis-smol"))]
mod redis_store {
    use super::{MAX_VALUE, Store, StoreError, StoreFuture};
    use std::fmt;
    use std::time::Duration;

    const SWAP: &str = r"
local v = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
  if v then return 0 end
elseif v ~= ARGV[2] then
  return 0
end
if ARGV[3] == '1' then redis.call('SET', KEYS[1], ARGV[4]) else redis.call('DEL', KEYS[1]) end
return 1
";

    /// A store in Redis (or Valkey): `redis://[user:password@]host:port/db`.
    ///
    /// One multiplexed connection, opened on first use and again after a
    /// failure. The caller bounds every call with its own timeout. With the
    /// tokio adapter the connection runs on tokio, with async-std on smol's
    /// executor (the `redis` crate's two runtimes).
    pub struct RedisStore {
        client: redis::Client,
        conn: async_lock::Mutex<Option<redis::aio::MultiplexedConnection>>,
        swap: redis::Script,
        shown: String,
    }

    impl fmt::Debug for RedisStore {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RedisStore")
                .field("at", &self.shown)
                .finish_non_exhaustive()
        }
    }

    /// The error as text for the log: the server's part sanitized.
    fn failed(e: &redis::RedisError) -> StoreError {
        StoreError::Unavailable(format!(
            "redis: {}",
            postern_common::sanitize(&e.to_string(), postern_common::SHOWN_CHARS)
        ))
    }

    impl RedisStore {
        /// A store at `url`. No connection is made yet.
        ///
        /// # Errors
        /// [`StoreError::Config`] for a URL the `redis` crate refuses.
        pub fn new(url: &str) -> Result<Self, StoreError> {
            let client = redis::Client::open(url)
                .map_err(|e| StoreError::Config(format!("redis URL: {e}")))?;
            let info = client.get_connection_info();
            let shown = format!("redis {}", info.addr());
            Ok(RedisStore {
                client,
                conn: async_lock::Mutex::new(None),
                swap: redis::Script::new(SWAP),
                shown,
            })
        }

        async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, StoreError> {
            let mut slot = self.conn.lock().await;
            if let Some(c) = slot.as_ref() {
                return Ok(c.clone());
            }
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(2)));
            let c = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| failed(&e))?;
            *slot = Some(c.clone());
            Ok(c)
        }

        async fn forget(&self) {
            *self.conn.lock().await = None;
        }

        async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
        where
            F: FnOnce(redis::aio::MultiplexedConnection) -> Fut,
            Fut: std::future::Future<Output = redis::RedisResult<T>>,
        {
            let conn = self.connection().await?;
            match f(conn).await {
                Ok(v) => Ok(v),
                Err(e) => {
                    // Whatever failed, the next operation starts on a fresh
                    // connection (a restarted server, a half-open socket).
                    self.forget().await;
                    Err(failed(&e))
                }
            }
        }
    }

    impl Store for RedisStore {
        fn reset(&self) {
            if let Some(mut conn) = self.conn.try_lock() {
                *conn = None;
            }
        }

        fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
            Box::pin(async move {
                let v: Option<Vec<u8>> = self
                    .run(
                        |mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await },
                    )
                    .await?;
                match v {
                    Some(v) if v.len() > MAX_VALUE => Err(StoreError::TooLarge(v.len())),
                    v => Ok(v),
                }
            })
        }

        fn swap<'a>(
            &'a self,
            key: &'a str,
            expected: Option<&'a [u8]>,
            new: Option<&'a [u8]>,
        ) -> StoreFuture<'a, bool> {
            Box::pin(async move {
                let n: i64 = self
                    .run(|mut c| async move {
                        self.swap
                            .key(key)
                            .arg(if expected.is_some() { "1" } else { "0" })
                            .arg(expected.unwrap_or_default())
                            .arg(if new.is_some() { "1" } else { "0" })
                            .arg(new.unwrap_or_default())
                            .invoke_async(&mut c)
                            .await
                    })
                    .await?;
                Ok(n == 1)
            })
        }

        fn add<'a>(
            &'a self,
            key: &'a str,
            window: u64,
            n: u64,
            keep: Duration,
        ) -> StoreFuture<'a, u64> {
            Box::pin(async move {
                let full = format!("{key}:{window}");
                let keep_ms = u64::try_from(keep.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1000);
                let (count,): (u64,) = self
                    .run(|mut c| async move {
                        redis::pipe()
                            .atomic()
                            .cmd("INCRBY")
                            .arg(&full)
                            .arg(n)
                            .cmd("PEXPIRE")
                            .arg(&full)
                            .arg(keep_ms)
                            .ignore()
                            .query_async(&mut c)
                            .await
                    })
                    .await?;
                Ok(count)
            })
        }
    }
}

/// Opens the store a URL names: `memory`, `file:PATH` (or a path starting
/// with `/` or `.`), `redis://...` (feature `redis` of an adapter).
///
/// # Errors
/// [`StoreError::Config`] for an unknown scheme, a store this build lacks,
/// or a directory that cannot be created.
pub fn open_store(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let url = url.trim();
    if url == "memory" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    if let Some(path) = url.strip_prefix("file:") {
        return Ok(Arc::new(FileStore::new(path.trim_start_matches("//"))?));
    }
    if url.starts_with('/') || url.starts_with('.') {
        return Ok(Arc::new(FileStore::new(url)?));
    }
    if url.starts_with("redis://") || url.starts_with("redis+unix://") || url.starts_with("unix://")
    {
        #[cfg(any(feature = "redis-tokio", feature = "redis-smol"))]
        return Ok(Arc::new(RedisStore::new(url)?));
        #[cfg(not(any(feature = "redis-tokio", feature = "redis-smol")))]
        return Err(StoreError::Config(
            "this build has no Redis store (feature `redis` of postern-tokio or postern-async-std)"
                .to_owned(),
        ));
    }
    Err(StoreError::Config(format!(
        "unknown store {:?}: use memory, file:PATH or redis://HOST:PORT",
        postern_common::sanitize(url, 80)
    )))
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
