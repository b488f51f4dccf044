//! The proxy on loopback, in process: local clients (raw SMTP lines, and
//! postern's own transport logging in with a password) against the proxy,
//! the proxy against an OAuth2-only submission server with STARTTLS and
//! its token endpoint (client credentials).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use postern_proxy::{Account, NoTls, Proxy, ProxySettings, Upstream, hash_password};
use postern_test_support::{
    Pki, ServerTls, SmtpServer, SmtpServerConfig, TokenServer, TokenServerConfig, Tokens,
};
use postern_tokio::smtp::{ServerConfig, ServerSecurity};
use postern_tokio::{
    ClientCredential, Envelope, Mailbox, OAuth2, PoolConfig, Secret, Security, TlsOptions, Tokio,
    Transport,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

const APP: &str = "app@example.com";
const LOCAL_PASSWORD: &str = "local pw";

struct Setup {
    upstream: SmtpServer,
    tokens: TokenServer,
    token_store: Tokens,
    proxy: Proxy<Tokio>,
    port: u16,
    pki: Pki,
}

async fn setup(upstream_config: SmtpServerConfig) -> Setup {
    setup_with(
        upstream_config,
        PoolConfig::default().max_connections(3),
        false,
    )
    .await
}

/// A local TLS acceptor from the test CA's localhost certificate.
struct TestTls(tokio_rustls::TlsAcceptor);

impl postern_proxy::LocalTls<Compat<TcpStream>> for TestTls {
    type Stream = Compat<tokio_rustls::server::TlsStream<TcpStream>>;
    async fn accept(&self, plain: Compat<TcpStream>) -> std::io::Result<Self::Stream> {
        Ok(self.0.accept(plain.into_inner()).await?.compat())
    }
}

async fn setup_with(
    upstream_config: SmtpServerConfig,
    pool: PoolConfig,
    local_starttls: bool,
) -> Setup {
    let pki = Pki::generate();
    let tokens = Tokens::default();
    let token_server = TokenServer::start(TokenServerConfig {
        clients: vec![("app".into(), "app~secret".into())],
        tokens: tokens.clone(),
        lifetime_secs: 3600,
        ..Default::default()
    })
    .unwrap();
    let upstream = SmtpServer::start(SmtpServerConfig {
        tls: ServerTls::StartTls(pki.localhost.server_config()),
        tokens: tokens.clone(),
        require_auth: true,
        ..upstream_config
    })
    .unwrap();
    let oauth = OAuth2::client_credentials(
        &token_server.url(),
        true,
        "app",
        ClientCredential::SecretPost(Secret::new("app~secret")),
        APP,
    )
    .unwrap();
    let mut roots = TlsOptions::default();
    roots.add_root_pem(pki.ca_pem.as_bytes()).unwrap();
    let transport = Transport::builder("localhost")
        .port(upstream.port())
        .security(Security::StartTls)
        .tls(roots)
        .oauth2(oauth)
        .pool(pool)
        .build()
        .unwrap();
    let account = Account::new(
        APP,
        hash_password(LOCAL_PASSWORD).unwrap(),
        Upstream::One(transport),
    )
    .aliases([Mailbox::parse("noreply@example.com").unwrap()]);
    let proxy = Proxy::new(Tokio, vec![account], ProxySettings::default()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let serving = proxy.clone();
    let acceptor = std::sync::Arc::new(TestTls(tokio_rustls::TlsAcceptor::from(
        pki.localhost.server_config(),
    )));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let proxy = serving.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let config = ServerConfig::default().hostname("proxy.test".into());
                if local_starttls {
                    let config = config.security(ServerSecurity::StartTls);
                    proxy.serve(stream.compat(), config, Some(&*acceptor)).await;
                } else {
                    let config = config.plaintext_auth(true);
                    proxy.serve(stream.compat(), config, None::<&NoTls>).await;
                }
            });
        }
    });
    Setup {
        upstream,
        tokens: token_server,
        token_store: tokens,
        proxy,
        port,
        pki,
    }
}

/// A scripted local client: sends a line, returns the reply's lines.
struct Client {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Client {
    async fn connect(port: u16) -> (Client, String) {
        let (read, writer) = TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap()
            .into_split();
        let mut c = Client {
            reader: BufReader::new(read),
            writer,
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await.unwrap() == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    async fn send(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }

    /// Logged in, MAIL and RCPT accepted, DATA answered `354`.
    async fn to_data(port: u16) -> Client {
        let (mut c, reply) = Client::login(port, LOCAL_PASSWORD).await;
        assert!(reply.starts_with("235"), "{reply}");
        for (line, code) in [
            ("MAIL FROM:<app@example.com>", "250"),
            ("RCPT TO:<rcpt@example.com>", "250"),
            ("DATA", "354"),
        ] {
            let reply = c.send(line).await;
            assert!(reply.starts_with(code), "{line}: {reply}");
        }
        c
    }

    async fn login(port: u16, password: &str) -> (Client, String) {
        let (mut c, _) = Client::connect(port).await;
        c.send("EHLO legacy.test").await;
        use base64::Engine;
        let plain =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{APP}\0{password}"));
        let reply = c.send(&format!("AUTH PLAIN {plain}")).await;
        (c, reply)
    }
}

#[tokio::test]
async fn local_refusals_never_reach_upstream() {
    let s = setup(SmtpServerConfig::default()).await;
    let (mut c, reply) = Client::login(s.port, "wrong").await;
    assert!(reply.starts_with("535 5.7.8"), "{reply}");
    assert!(
        c.send("MAIL FROM:<app@example.com>")
            .await
            .starts_with("530 5.7.0")
    );
    // No AUTH at all.
    let (mut c, _) = Client::connect(s.port).await;
    c.send("EHLO legacy.test").await;
    assert!(
        c.send("MAIL FROM:<app@example.com>")
            .await
            .starts_with("530")
    );
    // Logged in, but another sender.
    let (mut c, reply) = Client::login(s.port, LOCAL_PASSWORD).await;
    assert!(reply.starts_with("235"), "{reply}");
    let reply = c.send("MAIL FROM:<ceo@example.com>").await;
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    assert!(
        reply.contains("may not send as <ceo@example.com>"),
        "{reply}"
    );
    assert_eq!(s.tokens.requests(), 0, "no token was fetched");
    assert_eq!(
        s.upstream.connections(),
        0,
        "no upstream connection was opened"
    );
}

#[tokio::test]
async fn upstream_verdicts_at_rcpt_time_and_the_content_canonical() {
    let s = setup(SmtpServerConfig {
        reject_recipients: vec!["nobody@example.com".into()],
        ..Default::default()
    })
    .await;
    let (mut c, _) = Client::login(s.port, LOCAL_PASSWORD).await;
    assert!(
        c.send("MAIL FROM:<noreply@example.com>")
            .await
            .starts_with("250")
    );
    assert!(
        c.send("RCPT TO:<rcpt@example.com>")
            .await
            .starts_with("250")
    );
    let refused = c.send("RCPT TO:<nobody@example.com>").await;
    assert!(
        refused.starts_with("550 5.1.1"),
        "upstream's own verdict: {refused}"
    );
    assert!(c.send("DATA").await.starts_with("354"));
    c.writer
        .write_all(b"Subject: legacy\r\n\r\nbare\nlf and bare\rcr\r\n..dot\r\none\n.\ntwo\r\n.\r\n")
        .await
        .unwrap();
    let done = c.reply().await;
    assert!(done.starts_with("250"), "{done}");
    assert!(c.send("QUIT").await.starts_with("221"));
    let messages = s.upstream.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].to, ["rcpt@example.com"]);
    assert_eq!(
        String::from_utf8_lossy(messages[0].data.as_deref().unwrap()),
        "Subject: legacy\r\n\r\nbare\r\nlf and bare\r\ncr\r\n.dot\r\none\r\n.\r\ntwo\r\n"
    );
}

#[tokio::test]
async fn many_sessions_share_three_connections_and_one_token() {
    let s = setup(SmtpServerConfig::default()).await;
    let mut tasks = Vec::new();
    const N: usize = 100;
    for i in 0..N {
        let port = s.port;
        tasks.push(tokio::spawn(async move {
            // A legacy client: one session per message, password over
            // plaintext loopback.
            let t = Transport::builder("127.0.0.1")
                .port(port)
                .security(Security::Plaintext)
                .password(APP, LOCAL_PASSWORD)
                .dangerous_allow_credentials_without_tls(true)
                .pool(PoolConfig::default().max_messages_per_connection(1))
                .build()
                .unwrap();
            let envelope = Envelope::new(
                Mailbox::parse(APP).unwrap(),
                [Mailbox::parse(&format!("r{i}@example.com")).unwrap()],
            );
            let r = t
                .send(&envelope, format!("Subject: {i}\r\n\r\nbody {i}\r\n"))
                .await;
            t.shutdown().await;
            r.map(|_| ())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut subjects: Vec<String> = s
        .upstream
        .messages()
        .iter()
        .map(|m| {
            String::from_utf8_lossy(m.data.as_deref().unwrap())
                .lines()
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), N, "every message once");
    assert_eq!(s.upstream.messages().len(), N, "none twice");
    assert!(
        s.upstream.connections() <= 3,
        "{} upstream connections",
        s.upstream.connections()
    );
    assert_eq!(s.tokens.requests(), 1, "one token for all sessions");
    let stats = s.proxy.stats();
    assert_eq!(stats.sessions, N as u64);
}

#[tokio::test]
async fn upstream_down_gives_a_transient_reply() {
    let s = setup(SmtpServerConfig::default()).await;
    let upstream_port = s.upstream.port();
    drop(s.upstream);
    // Nothing listens there any more.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        TcpStream::connect(("127.0.0.1", upstream_port))
            .await
            .is_err()
    );
    let (mut c, _) = Client::login(s.port, LOCAL_PASSWORD).await;
    let reply = c.send("MAIL FROM:<app@example.com>").await;
    assert!(reply.starts_with("451 4.4.1"), "{reply}");
}

/// A legacy client as a postern transport logging in with the local
/// password; one session per message.
fn local_client(port: u16, security: Security, roots: Option<TlsOptions>) -> Transport {
    let mut b = Transport::builder(if roots.is_some() {
        "localhost"
    } else {
        "127.0.0.1"
    })
    .port(port)
    .security(security)
    .password(APP, LOCAL_PASSWORD)
    .pool(PoolConfig::default().max_messages_per_connection(1));
    if let Some(roots) = roots {
        b = b.tls(roots);
    } else {
        b = b.dangerous_allow_credentials_without_tls(true);
    }
    b.build().unwrap()
}

fn one(to: &str) -> Envelope {
    Envelope::new(Mailbox::parse(APP).unwrap(), [Mailbox::parse(to).unwrap()])
}

#[tokio::test]
async fn the_token_endpoint_down_gives_a_transient_reply() {
    let s = setup(SmtpServerConfig::default()).await;
    drop(s.tokens);
    let (mut c, reply) = Client::login(s.port, LOCAL_PASSWORD).await;
    assert!(reply.starts_with("235"), "{reply}");
    let reply = c.send("MAIL FROM:<app@example.com>").await;
    assert!(
        reply.starts_with("451 4.7.0 Upstream token unavailable"),
        "{reply}"
    );
    assert!(s.upstream.messages().is_empty());
}

#[tokio::test]
async fn a_revoked_token_is_refreshed_once_then_the_message_goes() {
    // One message per upstream connection, so the second one logs in again.
    let s = setup_with(
        SmtpServerConfig::default(),
        PoolConfig::default()
            .max_connections(3)
            .max_messages_per_connection(1),
        false,
    )
    .await;
    let client = local_client(s.port, Security::Plaintext, None);
    client
        .send(&one("a@example.com"), "Subject: one\r\n\r\n1\r\n")
        .await
        .unwrap();
    s.token_store.revoke_all();
    client
        .send(&one("b@example.com"), "Subject: two\r\n\r\n2\r\n")
        .await
        .unwrap();
    assert_eq!(s.upstream.messages().len(), 2);
    assert_eq!(s.tokens.requests(), 2, "one refresh after the rejection");
}

#[tokio::test]
async fn upstream_gone_after_the_content_is_never_a_250() {
    // The upstream stores the message and drops the connection before its
    // reply: the local client must not be told 250, and is told the
    // message may have been delivered.
    let s = setup(SmtpServerConfig {
        drop_after_data: true,
        ..Default::default()
    })
    .await;
    let mut c = Client::to_data(s.port).await;
    let reply = c.send("Subject: x\r\n\r\nbody\r\n.").await;
    assert!(reply.starts_with("451 4.4.2"), "{reply}");
    assert!(reply.contains("may have been delivered"), "{reply}");
}

/// An upstream that dies in the middle of the content: a raw script.
async fn dying_upstream() -> u16 {
    use tokio::io::AsyncReadExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut read = BufReader::new(read);
                write.write_all(b"220 dying ESMTP\r\n").await.unwrap();
                loop {
                    let mut line = String::new();
                    if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-dying\r\n250-PIPELINING\r\n250 AUTH PLAIN\r\n",
                        "AUTH" => b"235 2.7.0 ok\r\n",
                        "DATA" => {
                            write.write_all(b"354 go\r\n").await.unwrap();
                            let mut some = vec![0u8; 4096];
                            let _ = read.read(&mut some).await;
                            return; // gone mid-content
                        }
                        _ => b"250 ok\r\n",
                    };
                    write.write_all(reply).await.unwrap();
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn upstream_dying_mid_content_gives_a_transient_reply() {
    let upstream_port = dying_upstream().await;
    let transport = Transport::builder("127.0.0.1")
        .port(upstream_port)
        .security(Security::Plaintext)
        .password(APP, "upstream")
        .dangerous_allow_credentials_without_tls(true)
        .build()
        .unwrap();
    let account = Account::new(
        APP,
        hash_password(LOCAL_PASSWORD).unwrap(),
        Upstream::One(transport),
    );
    let proxy = Proxy::new(Tokio, vec![account], ProxySettings::default()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let config = ServerConfig::default().plaintext_auth(true);
        proxy.serve(stream.compat(), config, None::<&NoTls>).await;
    });
    let mut c = Client::to_data(port).await;
    let line = "x".repeat(900);
    for _ in 0..2000 {
        c.writer.write_all(line.as_bytes()).await.unwrap();
        c.writer.write_all(b"\r\n").await.unwrap();
    }
    let reply = c.send(".").await;
    assert!(reply.starts_with("451 4.4."), "{reply}");
}

#[tokio::test]
async fn local_starttls_offers_auth_only_after_the_handshake() {
    let s = setup_with(
        SmtpServerConfig::default(),
        PoolConfig::default().max_connections(3),
        true,
    )
    .await;
    // Before TLS: no AUTH offered, MAIL says STARTTLS first.
    let (mut c, _) = Client::connect(s.port).await;
    let ehlo = c.send("EHLO legacy.test").await;
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert!(
        c.send("MAIL FROM:<app@example.com>")
            .await
            .starts_with("530 5.7.0 Must issue a STARTTLS")
    );
    // A client that does STARTTLS, verifying the proxy's certificate.
    let mut roots = TlsOptions::default();
    roots.add_root_pem(s.pki.ca_pem.as_bytes()).unwrap();
    let client = local_client(s.port, Security::StartTls, Some(roots));
    client
        .send(&one("rcpt@example.com"), "Subject: tls\r\n\r\nover TLS\r\n")
        .await
        .unwrap();
    assert_eq!(s.upstream.messages().len(), 1);
}

#[tokio::test]
async fn plaintext_pipelined_after_starttls_is_dropped() {
    let s = setup_with(
        SmtpServerConfig::default(),
        PoolConfig::default().max_connections(3),
        true,
    )
    .await;
    let (mut c, _) = Client::connect(s.port).await;
    c.send("EHLO legacy.test").await;
    // STARTTLS and a command behind it in one write: the injection of
    // CVE-2011-0411. No 220: the session ends.
    c.writer
        .write_all(b"STARTTLS\r\nMAIL FROM:<app@example.com>\r\n")
        .await
        .unwrap();
    let reply = c.reply().await;
    assert!(reply.starts_with("421 4.7.0"), "{reply}");
    assert_eq!(c.reply().await, "", "the connection is closed");
    assert_eq!(s.upstream.connections(), 0);
}
