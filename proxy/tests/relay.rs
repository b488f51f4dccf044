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
use postern_tokio::smtp::ServerConfig;
use postern_tokio::{
    ClientCredential, Envelope, Mailbox, OAuth2, PoolConfig, Secret, Security, TlsOptions, Tokio,
    Transport,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::TokioAsyncReadCompatExt;

const APP: &str = "app@example.com";
const LOCAL_PASSWORD: &str = "local pw";

struct Setup {
    upstream: SmtpServer,
    tokens: TokenServer,
    proxy: Proxy<Tokio>,
    port: u16,
}

async fn setup(upstream_config: SmtpServerConfig) -> Setup {
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
        tokens,
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
        .pool(PoolConfig::default().max_connections(3))
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
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let proxy = serving.clone();
            tokio::spawn(async move {
                let config = ServerConfig::default()
                    .hostname("proxy.test".into())
                    .plaintext_auth(true);
                proxy.serve(stream.compat(), config, None::<&NoTls>).await;
            });
        }
    });
    Setup {
        upstream,
        tokens: token_server,
        proxy,
        port,
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
