//! An in-process SMTP submission server on loopback: STARTTLS or implicit
//! TLS, AUTH PLAIN / LOGIN / XOAUTH2 / OAUTHBEARER (bearer tokens checked
//! against [`Tokens`]), PIPELINING, optional CHUNKING, and a record of what
//! it received. It runs on its own thread and tokio runtime, so clients on
//! any runtime can use it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream, ReadBuf,
};
use tokio_rustls::rustls;

use crate::tokens::Tokens;
use crate::{Background, Conn, Fnv, lock};

/// The server's TLS mode.
#[derive(Clone, Debug, Default)]
pub enum ServerTls {
    /// Plaintext only.
    #[default]
    None,
    /// STARTTLS offered with this configuration.
    StartTls(Arc<rustls::ServerConfig>),
    /// TLS from the first byte.
    Implicit(Arc<rustls::ServerConfig>),
}

/// Settings of a [`SmtpServer`].
#[derive(Clone, Debug)]
pub struct SmtpServerConfig {
    /// TLS mode.
    pub tls: ServerTls,
    /// Accepted PLAIN/LOGIN users and passwords.
    pub users: Vec<(String, String)>,
    /// Valid bearer tokens for XOAUTH2/OAUTHBEARER.
    pub tokens: Tokens,
    /// Offer AUTH on a plaintext connection.
    pub auth_without_tls: bool,
    /// Refuse MAIL before AUTH (`530 5.7.0`).
    pub require_auth: bool,
    /// Offer CHUNKING (BDAT).
    pub chunking: bool,
    /// Keep message bytes (else only size and digest).
    pub keep_bodies: bool,
    /// Compute the FNV digest of each message (off: count bytes only, for
    /// throughput measurements).
    pub hash_bodies: bool,
    /// Recipients refused with `550 5.1.1`.
    pub reject_recipients: Vec<String>,
    /// Senders refused at MAIL with `550 5.7.1`.
    pub reject_senders: Vec<String>,
    /// Replies given to the next MAIL commands, in order, across sessions,
    /// before the usual `250` (a provider's limit refusals).
    pub mail_script: Arc<Mutex<std::collections::VecDeque<String>>>,
    /// Close a session idle this long with `421 4.4.2`.
    pub idle_close: Option<Duration>,
    /// Answer every AUTH with this reply at once (for example Exchange's
    /// `535 5.7.139 ...` when SMTP AUTH is disabled).
    pub auth_reply: Option<String>,
    /// The mechanisms offered in `250-AUTH`.
    pub mechanisms: String,
    /// Write each accepted message to `DIR/<n>.eml`.
    pub store_dir: Option<std::path::PathBuf>,
    /// Record the dialogue (AUTH responses redacted, bodies summarised).
    pub transcript: bool,
    /// Store the message, then close the connection without the reply to
    /// the final `.` (a server that crashed at the worst moment).
    pub drop_after_data: bool,
    /// Offer 8BITMIME (default `true`).
    pub eight_bit_mime: bool,
    /// Offer SMTPUTF8 (default `true`).
    pub smtputf8: bool,
}

impl Default for SmtpServerConfig {
    fn default() -> Self {
        SmtpServerConfig {
            tls: ServerTls::None,
            users: Vec::new(),
            tokens: Tokens::default(),
            auth_without_tls: false,
            require_auth: false,
            chunking: false,
            keep_bodies: true,
            hash_bodies: true,
            reject_recipients: Vec::new(),
            reject_senders: Vec::new(),
            mail_script: Arc::default(),
            idle_close: None,
            auth_reply: None,
            mechanisms: "PLAIN LOGIN XOAUTH2 OAUTHBEARER".to_owned(),
            store_dir: None,
            transcript: false,
            drop_after_data: false,
            eight_bit_mime: true,
            smtputf8: true,
        }
    }
}

/// A message the server accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// MAIL FROM address.
    pub from: String,
    /// Accepted RCPT TO addresses.
    pub to: Vec<String>,
    /// The authenticated user, if any.
    pub user: Option<String>,
    /// Size of the message after un-stuffing, CRLF line ends.
    pub size: u64,
    /// FNV-1a 64 of those bytes.
    pub digest: u64,
    /// The bytes, when kept.
    pub data: Option<Vec<u8>>,
    /// Where the message was written, with `store_dir`.
    pub path: Option<std::path::PathBuf>,
}

/// One AUTH attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthAttempt {
    /// The mechanism named.
    pub mechanism: String,
    /// The user in the SASL message.
    pub user: String,
    /// Whether it succeeded.
    pub ok: bool,
}

#[derive(Default)]
struct Record {
    connections: AtomicU64,
    quits: AtomicU64,
    messages: Mutex<Vec<Received>>,
    auths: Mutex<Vec<AuthAttempt>>,
    transcript: Mutex<Vec<String>>,
    /// Wakes sessions waiting for a command, to close them as idle.
    kick: tokio::sync::Notify,
    idle_closed: AtomicU64,
    /// TLS sessions the client ended with close_notify.
    close_notify: AtomicU64,
    /// TLS sessions that ended without it (the TCP connection just closed).
    no_close_notify: AtomicU64,
}

/// A running server; stopped when dropped.
pub struct SmtpServer {
    server: Background,
    record: Arc<Record>,
}

impl SmtpServer {
    /// Starts a server on `127.0.0.1`, on a free port.
    pub fn start(config: SmtpServerConfig) -> io::Result<SmtpServer> {
        let record = Arc::new(Record::default());
        let rec = Arc::clone(&record);
        let config = Arc::new(config);
        let server = Background::spawn("smtp-server", move |tcp| {
            rec.connections.fetch_add(1, Ordering::Relaxed);
            let config = Arc::clone(&config);
            let rec = Arc::clone(&rec);
            async move {
                // A session ending in an IO error is the client's business;
                // the record says the rest.
                let _ = session(tcp, config, rec).await;
            }
        })?;
        Ok(SmtpServer { server, record })
    }

    /// The listening address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The listening port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// A new session over an in-memory pipe instead of TCP (what
    /// [`crate::Virtual`] connects to); the returned end is the client's.
    #[must_use]
    pub fn connect_in_memory(&self) -> tokio::io::DuplexStream {
        self.server.attach()
    }

    pub(crate) fn dialer(&self) -> crate::Dialer {
        self.server.dialer()
    }

    /// Ends every session that is waiting for a command now with `421 4.4.2`,
    /// as a server does to clients idle too long, and returns at once; see
    /// [`SmtpServer::idle_closed`].
    pub fn close_idle_sessions(&self) {
        self.record.kick.notify_waiters();
    }

    /// TLS sessions the client ended cleanly, with a TLS `close_notify`
    /// before closing the TCP connection, and those it just dropped:
    /// `(clean, unclean)`. After QUIT the server reads on to see which.
    #[must_use]
    pub fn tls_closes(&self) -> (u64, u64) {
        (
            self.record.close_notify.load(Ordering::Relaxed),
            self.record.no_close_notify.load(Ordering::Relaxed),
        )
    }

    /// Sessions ended by [`SmtpServer::close_idle_sessions`] or `idle_close`.
    #[must_use]
    pub fn idle_closed(&self) -> u64 {
        self.record.idle_closed.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    #[must_use]
    pub fn connections(&self) -> u64 {
        self.record.connections.load(Ordering::Relaxed)
    }

    /// QUIT commands received so far.
    #[must_use]
    pub fn quits(&self) -> u64 {
        self.record.quits.load(Ordering::Relaxed)
    }

    /// Messages accepted so far.
    #[must_use]
    pub fn messages(&self) -> Vec<Received> {
        lock(&self.record.messages).clone()
    }

    /// The recorded dialogue (with `transcript`), one line per entry,
    /// prefixed `C:` or `S:`.
    #[must_use]
    pub fn transcript(&self) -> Vec<String> {
        lock(&self.record.transcript).clone()
    }

    /// AUTH attempts so far.
    #[must_use]
    pub fn auths(&self) -> Vec<AuthAttempt> {
        lock(&self.record.auths).clone()
    }
}

enum Io {
    Plain(Conn),
    /// TLS, with the record where the end of the TLS session is counted
    /// (once: `true` after it was).
    Tls(
        Box<tokio_rustls::server::TlsStream<Conn>>,
        Arc<Record>,
        bool,
    ),
    /// Only while the plaintext stream is in the TLS acceptor.
    Upgrading,
}

fn upgrading<T>() -> Poll<io::Result<T>> {
    Poll::Ready(Err(io::ErrorKind::NotConnected.into()))
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s, record, ended) => {
                let before = buf.filled().len();
                let r = Pin::new(s).poll_read(cx, buf);
                let end = match &r {
                    Poll::Ready(Ok(())) if buf.filled().len() == before => {
                        Some(&record.close_notify)
                    }
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        Some(&record.no_close_notify)
                    }
                    _ => None,
                };
                if let Some(counter) = end.filter(|_| !*ended) {
                    *ended = true;
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                r
            }
            Io::Upgrading => upgrading(),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s, ..) => Pin::new(s).poll_write(cx, buf),
            Io::Upgrading => upgrading(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s, ..) => Pin::new(s).poll_flush(cx),
            Io::Upgrading => upgrading(),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s, ..) => Pin::new(s).poll_shutdown(cx),
            Io::Upgrading => upgrading(),
        }
    }
}

struct Session {
    s: BufStream<Io>,
    config: Arc<SmtpServerConfig>,
    record: Arc<Record>,
    tls: bool,
    user: Option<String>,
    from: Option<String>,
    to: Vec<String>,
    line: Vec<u8>,
    /// Inside an AUTH exchange (client lines are credentials).
    in_auth: bool,
    /// BDAT chunks so far: digest, size, bytes when kept.
    chunk: (Fnv, u64, Vec<u8>),
}

const MAX_LINE: usize = 64 * 1024;
/// Read buffer per session: large enough that a DATA stream is scanned in
/// big slices.
const READ_BUFFER: usize = 64 * 1024;

async fn session(tcp: Conn, config: Arc<SmtpServerConfig>, record: Arc<Record>) -> io::Result<()> {
    let (io, tls) = match &config.tls {
        ServerTls::Implicit(c) => {
            let tls = tokio_rustls::TlsAcceptor::from(Arc::clone(c))
                .accept(tcp)
                .await?;
            (Io::Tls(Box::new(tls), Arc::clone(&record), false), true)
        }
        _ => (Io::Plain(tcp), false),
    };
    let mut s = Session {
        s: BufStream::with_capacity(READ_BUFFER, 8 * 1024, io),
        config,
        record,
        tls,
        user: None,
        from: None,
        to: Vec::new(),
        line: Vec::new(),
        chunk: Default::default(),
        in_auth: false,
    };
    s.reply("220 localhost ESMTP postern test server").await?;
    s.run().await
}

impl Session {
    fn log(&self, line: String) {
        if self.config.transcript {
            lock(&self.record.transcript).push(line);
        }
    }

    async fn reply(&mut self, text: &str) -> io::Result<()> {
        for line in text.split("\r\n") {
            self.log(format!("S: {line}"));
        }
        self.s.write_all(text.as_bytes()).await?;
        self.s.write_all(b"\r\n").await?;
        self.s.flush().await
    }

    /// The next line without CRLF; `None` at EOF.
    async fn read_line(&mut self) -> io::Result<Option<String>> {
        self.line.clear();
        let record = Arc::clone(&self.record);
        let idle_close = self.config.idle_close;
        let read = self.s.read_until(b'\n', &mut self.line);
        let idle = async {
            match idle_close {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let n = tokio::select! {
            r = read => Some(r?),
            () = record.kick.notified() => None,
            () = idle => None,
        };
        let Some(n) = n else {
            record.idle_closed.fetch_add(1, Ordering::Relaxed);
            self.reply("421 4.4.2 localhost Error: timeout exceeded")
                .await?;
            return Ok(None);
        };
        if n == 0 {
            return Ok(None);
        }
        if self.line.len() > MAX_LINE {
            return Err(io::Error::other("line too long"));
        }
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end_matches(['\r', '\n']).to_owned();
        if self.config.transcript {
            let upper = text.to_ascii_uppercase();
            let shown = if self.in_auth {
                "[SASL response redacted]".to_owned()
            } else if upper.starts_with("AUTH ") && text.split(' ').count() > 2 {
                let mut words = text.split(' ');
                let verb = words.next().unwrap_or("");
                let mech = words.next().unwrap_or("");
                format!("{verb} {mech} [initial response redacted]")
            } else {
                text.clone()
            };
            self.log(format!("C: {shown}"));
        }
        Ok(Some(text))
    }

    async fn run(&mut self) -> io::Result<()> {
        while let Some(line) = self.read_line().await? {
            let upper = line.to_ascii_uppercase();
            let verb = upper.split(' ').next().unwrap_or("");
            match verb {
                "EHLO" => self.ehlo().await?,
                "HELO" => self.reply("250 localhost").await?,
                "STARTTLS" => {
                    let ServerTls::StartTls(c) = &self.config.tls else {
                        self.reply("502 5.5.1 STARTTLS not available").await?;
                        continue;
                    };
                    if self.tls {
                        self.reply("503 5.5.1 TLS already active").await?;
                        continue;
                    }
                    let c = Arc::clone(c);
                    self.reply("220 2.0.0 Ready to start TLS").await?;
                    let old = std::mem::replace(
                        &mut self.s,
                        BufStream::with_capacity(READ_BUFFER, 8 * 1024, Io::Upgrading),
                    );
                    let Io::Plain(tcp) = old.into_inner() else {
                        return Err(io::Error::other("not plaintext"));
                    };
                    let tls = tokio_rustls::TlsAcceptor::from(c).accept(tcp).await?;
                    self.s = BufStream::with_capacity(
                        READ_BUFFER,
                        8 * 1024,
                        Io::Tls(Box::new(tls), Arc::clone(&self.record), false),
                    );
                    self.tls = true;
                    self.user = None;
                }
                "AUTH" => {
                    self.in_auth = true;
                    let r = self.auth(&line).await;
                    self.in_auth = false;
                    r?;
                }
                "MAIL" => {
                    let from = angle(&line);
                    let scripted = self
                        .config
                        .mail_script
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .pop_front();
                    if self.config.require_auth && self.user.is_none() {
                        self.reply("530 5.7.0 Authentication required").await?;
                    } else if let Some(reply) = scripted {
                        self.reply(&reply).await?;
                    } else if self
                        .config
                        .reject_senders
                        .iter()
                        .any(|r| r.eq_ignore_ascii_case(&from))
                    {
                        self.reply("550 5.7.1 Sender not allowed").await?;
                    } else {
                        self.from = Some(from);
                        self.to.clear();
                        self.reply("250 2.1.0 Ok").await?;
                    }
                }
                "RCPT" => {
                    let to = angle(&line);
                    if self.from.is_none() {
                        self.reply("503 5.5.1 Error: need MAIL command").await?;
                    } else if self
                        .config
                        .reject_recipients
                        .iter()
                        .any(|r| r.eq_ignore_ascii_case(&to))
                    {
                        self.reply(&format!(
                            "550 5.1.1 <{to}>: Recipient address rejected: User unknown"
                        ))
                        .await?;
                    } else {
                        self.to.push(to);
                        self.reply("250 2.1.5 Ok").await?;
                    }
                }
                "DATA" => {
                    if self.to.is_empty() {
                        self.reply("554 5.5.1 Error: no valid recipients").await?;
                        continue;
                    }
                    self.reply("354 End data with <CR><LF>.<CR><LF>").await?;
                    self.data().await?;
                }
                "BDAT" => self.bdat(&upper).await?,
                "RSET" => {
                    self.from = None;
                    self.to.clear();
                    self.reply("250 2.0.0 Ok").await?;
                }
                "NOOP" => self.reply("250 2.0.0 Ok").await?,
                "QUIT" => {
                    self.record.quits.fetch_add(1, Ordering::Relaxed);
                    self.reply("221 2.0.0 Bye").await?;
                    // See how the client ends the TLS session.
                    if self.tls {
                        let mut rest = [0u8; 64];
                        let _ =
                            tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut rest))
                                .await;
                    }
                    return Ok(());
                }
                _ => {
                    self.reply("502 5.5.2 Error: command not recognized")
                        .await?
                }
            }
        }
        Ok(())
    }

    async fn ehlo(&mut self) -> io::Result<()> {
        let mut lines = vec!["localhost".to_owned(), "PIPELINING".into()];
        if self.config.eight_bit_mime {
            lines.push("8BITMIME".into());
        }
        lines.push("ENHANCEDSTATUSCODES".into());
        if matches!(self.config.tls, ServerTls::StartTls(_)) && !self.tls {
            lines.push("STARTTLS".into());
        }
        if self.tls || self.config.auth_without_tls {
            lines.push(format!("AUTH {}", self.config.mechanisms));
        }
        if self.config.chunking {
            lines.push("CHUNKING".into());
        }
        if self.config.smtputf8 {
            lines.push("SMTPUTF8".into());
        }
        let n = lines.len();
        let mut text = String::new();
        for (i, l) in lines.iter().enumerate() {
            text.push_str(if i + 1 == n { "250 " } else { "250-" });
            text.push_str(l);
            if i + 1 < n {
                text.push_str("\r\n");
            }
        }
        self.reply(&text).await
    }

    async fn response(
        &mut self,
        initial: Option<&str>,
        prompt: &str,
    ) -> io::Result<Option<Vec<u8>>> {
        let text = match initial {
            Some(t) => t.to_owned(),
            None => {
                self.reply(&format!("334 {prompt}")).await?;
                self.read_line().await?.unwrap_or_default()
            }
        };
        if text == "*" {
            return Ok(None);
        }
        if text == "=" {
            return Ok(Some(Vec::new()));
        }
        Ok(B64.decode(text.trim()).ok())
    }

    async fn auth(&mut self, line: &str) -> io::Result<()> {
        let mut parts = line.split(' ').skip(1);
        let mechanism = parts.next().unwrap_or("").to_ascii_uppercase();
        let initial = parts.next();
        if !(self.tls || self.config.auth_without_tls) {
            return self
                .reply("538 5.7.11 Encryption required for requested authentication mechanism")
                .await;
        }
        if self.user.is_some() {
            return self.reply("503 5.5.1 Error: already authenticated").await;
        }
        if let Some(reply) = self.config.auth_reply.clone() {
            lock(&self.record.auths).push(AuthAttempt {
                mechanism,
                user: String::new(),
                ok: false,
            });
            return self.reply(&reply).await;
        }
        let offered = self
            .config
            .mechanisms
            .split(' ')
            .any(|m| m.eq_ignore_ascii_case(&mechanism));
        if !offered {
            return self
                .reply("504 5.5.4 Unrecognized authentication type")
                .await;
        }
        let (user, ok) = match mechanism.as_str() {
            "PLAIN" => {
                let Some(resp) = self.response(initial, "").await? else {
                    return self.reply("501 5.7.0 Authentication cancelled").await;
                };
                let fields: Vec<&[u8]> = resp.split(|b| *b == 0).collect();
                let (user, pass) = match fields.as_slice() {
                    [_, u, p] => (
                        String::from_utf8_lossy(u).into_owned(),
                        String::from_utf8_lossy(p).into_owned(),
                    ),
                    _ => return self.reply("501 5.5.2 malformed PLAIN response").await,
                };
                let ok = self.password_ok(&user, &pass);
                (user, ok)
            }
            "LOGIN" => {
                let Some(user) = self.response(initial, "VXNlcm5hbWU6").await? else {
                    return self.reply("501 5.7.0 Authentication cancelled").await;
                };
                let Some(pass) = self.response(None, "UGFzc3dvcmQ6").await? else {
                    return self.reply("501 5.7.0 Authentication cancelled").await;
                };
                let user = String::from_utf8_lossy(&user).into_owned();
                let pass = String::from_utf8_lossy(&pass).into_owned();
                let ok = self.password_ok(&user, &pass);
                (user, ok)
            }
            "XOAUTH2" | "OAUTHBEARER" => {
                let Some(resp) = self.response(initial, "").await? else {
                    return self.reply("501 5.7.0 Authentication cancelled").await;
                };
                let text = String::from_utf8_lossy(&resp).into_owned();
                let mut user = String::new();
                let mut token = String::new();
                for field in text.split('\u{1}') {
                    if let Some(u) = field.strip_prefix("user=") {
                        user = u.to_owned();
                    } else if let Some(rest) = field.strip_prefix("n,a=") {
                        user = rest.trim_end_matches(',').to_owned();
                    } else if let Some(t) = field.strip_prefix("auth=Bearer ") {
                        token = t.to_owned();
                    }
                }
                let ok = !token.is_empty() && self.config.tokens.is_valid(&token);
                if !ok {
                    let challenge = if mechanism == "XOAUTH2" {
                        r#"{"status":"401","schemes":"bearer","scope":"https://mail.example/"}"#
                    } else {
                        r#"{"status":"invalid_token","scope":"https://mail.example/"}"#
                    };
                    self.reply(&format!("334 {}", B64.encode(challenge)))
                        .await?;
                    // The client's acknowledgement (empty line or AQ==).
                    let _ = self.read_line().await?;
                }
                (user, ok)
            }
            _ => {
                return self
                    .reply("504 5.5.4 Unrecognized authentication type")
                    .await;
            }
        };
        lock(&self.record.auths).push(AuthAttempt {
            mechanism: mechanism.clone(),
            user: user.clone(),
            ok,
        });
        if ok {
            self.user = Some(user);
            self.reply("235 2.7.0 Authentication successful").await
        } else {
            self.reply("535 5.7.8 Error: authentication failed").await
        }
    }

    fn password_ok(&self, user: &str, pass: &str) -> bool {
        self.config
            .users
            .iter()
            .any(|(u, p)| u == user && p == pass)
    }

    async fn data(&mut self) -> io::Result<()> {
        if !self.config.hash_bodies && !self.config.keep_bodies {
            let size = self.discard_data().await?;
            self.store(size, Fnv::new().finish(), None);
            return self.reply("250 2.0.0 Ok: queued").await;
        }
        let mut hash = Fnv::new();
        let mut size = 0u64;
        let mut kept = self.config.keep_bodies.then(Vec::new);
        loop {
            self.line.clear();
            let n = self.s.read_until(b'\n', &mut self.line).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if self.line == b".\r\n" {
                break;
            }
            let bytes = self.line.strip_prefix(b".").unwrap_or(&self.line);
            if self.config.hash_bodies {
                hash.update(bytes);
            }
            size += bytes.len() as u64;
            if let Some(k) = &mut kept {
                k.extend_from_slice(bytes);
            }
        }
        self.store(size, hash.finish(), kept);
        if self.config.drop_after_data {
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        self.reply("250 2.0.0 Ok: queued").await
    }

    /// Reads DATA up to the terminating `.` line straight from the read
    /// buffer, without copying lines: the fast path for throughput runs.
    /// Returns the size after un-stuffing.
    async fn discard_data(&mut self) -> io::Result<u64> {
        let mut size = 0u64;
        // Length of the current line so far and its first three bytes.
        let mut line_len = 0usize;
        let mut head = [0u8; 3];
        loop {
            let buf = self.s.fill_buf().await?;
            if buf.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut at = 0;
            let mut end = None;
            while at < buf.len() {
                let nl = memchr::memchr(b'\n', &buf[at..]);
                let seg = &buf[at..nl.map_or(buf.len(), |i| at + i + 1)];
                for (k, b) in seg.iter().take(3usize.saturating_sub(line_len)).enumerate() {
                    head[line_len + k] = *b;
                }
                line_len += seg.len();
                at += seg.len();
                if nl.is_some() {
                    if line_len == 3 && head == *b".\r\n" {
                        end = Some(at);
                        break;
                    }
                    size += (line_len - usize::from(head[0] == b'.')) as u64;
                    line_len = 0;
                    head = [0; 3];
                }
            }
            let consumed = end.unwrap_or(buf.len());
            self.s.consume(consumed);
            if end.is_some() {
                // A partial line cannot precede the terminator.
                return Ok(size);
            }
        }
    }

    async fn bdat(&mut self, upper: &str) -> io::Result<()> {
        let mut words = upper.split(' ').skip(1);
        let Some(Ok(mut left)) = words.next().map(str::parse::<u64>) else {
            return self.reply("501 5.5.4 Syntax: BDAT count [LAST]").await;
        };
        let last = words.next() == Some("LAST");
        let mut buf = vec![0u8; 64 * 1024];
        let chunk = &mut self.chunk;
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            self.s.read_exact(&mut buf[..want]).await?;
            chunk.0.update(&buf[..want]);
            chunk.1 += want as u64;
            if self.config.keep_bodies {
                chunk.2.extend_from_slice(&buf[..want]);
            }
            left -= want as u64;
        }
        if last {
            let (hash, size, data) = std::mem::take(chunk);
            let kept = self.config.keep_bodies.then_some(data);
            self.store(size, hash.finish(), kept);
            self.reply("250 2.0.0 Ok: queued").await
        } else {
            self.reply("250 2.0.0 Ok: chunk received").await
        }
    }

    fn store(&mut self, size: u64, digest: u64, data: Option<Vec<u8>>) {
        self.log(format!("C: [message, {size} bytes]"));
        let mut messages = lock(&self.record.messages);
        let path = self.config.store_dir.as_ref().and_then(|dir| {
            let path = dir.join(format!("{}.eml", messages.len() + 1));
            let bytes = data.as_deref()?;
            std::fs::write(&path, bytes).ok()?;
            Some(path)
        });
        messages.push(Received {
            from: self.from.take().unwrap_or_default(),
            to: std::mem::take(&mut self.to),
            user: self.user.clone(),
            size,
            digest,
            data,
            path,
        });
    }
}

/// The address between the first `<` and `>` of a MAIL or RCPT line.
fn angle(line: &str) -> String {
    let start = line.find('<').map_or(0, |i| i + 1);
    let end = line[start..].find('>').map_or(line.len(), |i| start + i);
    line[start..end].to_owned()
}
