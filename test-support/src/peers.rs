//! Tests against the real peers that `tests/peers/start.sh` runs: Dovecot
//! submission, Postfix with Dovecot SASL, oidc-provider. Written once,
//! run by both adapters (`peer_tests!`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use postern_transport::oauth::FetchError;
use postern_transport::runtime::Runtime;
use postern_transport::{
    AuthFailureKind, CacheConfig, ClientCredential, Envelope, Error, Mailbox, Mechanism, OAuth2,
    PoolConfig, Secret, Security, Timeouts, TlsOptions, Transport, TransportBuilder,
};

/// Where the peers run, read from the file `POSTERN_PEERS_ENV` names.
#[derive(Clone, Debug)]
pub struct Peers {
    env: HashMap<String, String>,
}

/// The two SMTP servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// Dovecot's submission service (oauth2 passdb).
    Dovecot,
    /// Postfix smtpd with Dovecot SASL.
    Postfix,
}

impl Peers {
    /// The running peers; `None` when `POSTERN_PEERS_ENV` is unset and
    /// `POSTERN_REAL_PEERS` is not `1` (then the tests are skipped with a
    /// note; CI sets both, so they cannot be skipped there).
    #[must_use]
    pub fn get() -> Option<Peers> {
        let required = std::env::var_os("POSTERN_REAL_PEERS").is_some_and(|v| v == "1");
        let Some(path) = std::env::var_os("POSTERN_PEERS_ENV") else {
            assert!(
                !required,
                "POSTERN_REAL_PEERS=1 but POSTERN_PEERS_ENV is not set: run tests/peers/start.sh"
            );
            eprintln!(
                "real peers not running (tests/peers/start.sh, then POSTERN_PEERS_ENV): skipped"
            );
            return None;
        };
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.to_string_lossy()));
        let env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Some(Peers { env })
    }

    /// A value of the env file.
    #[must_use]
    pub fn var(&self, key: &str) -> &str {
        self.env.get(key).map_or("", String::as_str)
    }

    fn port(&self, key: &str) -> u16 {
        self.var(key).parse().unwrap()
    }

    /// The submission port of `server` (STARTTLS) or its implicit-TLS port.
    #[must_use]
    pub fn smtp_port(&self, server: Server, implicit: bool) -> u16 {
        match (server, implicit) {
            (Server::Dovecot, false) => self.port("DOVECOT_SUBMISSION_PORT"),
            (Server::Dovecot, true) => self.port("DOVECOT_SUBMISSIONS_PORT"),
            (Server::Postfix, false) => self.port("POSTFIX_SUBMISSION_PORT"),
            (Server::Postfix, true) => self.port("POSTFIX_SUBMISSIONS_PORT"),
        }
    }

    /// TLS options trusting the peers' CA.
    #[must_use]
    pub fn tls(&self) -> TlsOptions {
        let mut t = TlsOptions::default();
        t.add_root_pem_file(self.var("CA_FILE")).unwrap();
        t
    }

    /// A transport to `server` on `host` (`localhost` or `127.0.0.2`).
    pub fn builder<R: Runtime + Default>(
        &self,
        server: Server,
        implicit: bool,
        host: &str,
    ) -> TransportBuilder<R> {
        Transport::<R>::builder(host)
            .port(self.smtp_port(server, implicit))
            .security(if implicit {
                Security::ImplicitTls
            } else {
                Security::StartTls
            })
            .tls(self.tls())
            .timeouts(Timeouts::uniform(Duration::from_secs(30)))
    }

    /// Client credentials for an oidc-provider client.
    #[must_use]
    pub fn oauth(&self, client: &str, secret: &str, basic: bool) -> OAuth2 {
        let credential = if basic {
            ClientCredential::SecretBasic(Secret::new(secret))
        } else {
            ClientCredential::SecretPost(Secret::new(secret))
        };
        OAuth2::client_credentials(
            self.var("TOKEN_URL"),
            true,
            client,
            credential,
            "sender@example.com",
        )
        .unwrap()
        .scope("mail")
    }

    /// Client credentials for `short-client`, whose tokens live 4 s; the
    /// expiry margin is lowered so each token is used for most of its life.
    #[must_use]
    pub fn short_lived_oauth(&self) -> OAuth2 {
        self.oauth("short-client", "short-secret~4", false)
            .cache_config(CacheConfig::default().expiry_margin(Duration::from_millis(500)))
    }

    /// A refresh token oidc-provider issues for `client` and `account` (its
    /// `/mint-refresh` hook, as an authorization-code flow would), and the
    /// name of its grant for [`Peers::grant_stats`].
    #[must_use]
    pub fn mint_refresh_token(&self, client: &str, account: &str) -> (String, String) {
        let v = self.token_server_json(&format!("/mint-refresh/{client}/{account}"));
        (
            v["refresh_token"].as_str().unwrap().to_owned(),
            v["grant"].as_str().unwrap().to_owned(),
        )
    }

    /// How many token requests redeemed a refresh token of `grant`, by
    /// outcome and grant type (`success:refresh_token`,
    /// `error-invalid_grant:refresh_token`, ...); other grants, other tests'
    /// included, are not counted.
    #[must_use]
    pub fn grant_stats(&self, grant: &str) -> std::collections::BTreeMap<String, u64> {
        let v = self.token_server_json(&format!("/stats/{grant}"));
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect()
    }

    /// GET `path` of oidc-provider's test hooks, as JSON.
    fn token_server_json(&self, path: &str) -> serde_json::Value {
        use std::io::{Read as _, Write as _};
        let authority = self.var("ISSUER").trim_start_matches("http://").to_owned();
        let mut s = std::net::TcpStream::connect(&authority).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap()
    }

    /// The Maildir messages of `user` (local part) whose text contains
    /// `needle`, waiting up to 20 s for `count` of them.
    #[must_use]
    pub fn wait_for_mail(&self, user: &str, needle: &str, count: usize) -> Vec<String> {
        let dir = PathBuf::from(self.var("MAIL_DIR"))
            .join("example.com")
            .join(user)
            .join("new");
        let start = Instant::now();
        loop {
            let mut found = Vec::new();
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if let Ok(text) = std::fs::read_to_string(e.path())
                        && text.contains(needle)
                    {
                        found.push(text);
                    }
                }
            }
            if found.len() >= count || start.elapsed() > Duration::from_secs(20) {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A unique tag for one message of this process.
fn tag(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{what}-{}-{}-{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A message with CRLF lines, a leading dot, 8-bit-free text, tagged.
fn message(tag: &str) -> String {
    format!(
        "From: <sender@example.com>\r\nTo: <rcpt@example.com>\r\nSubject: {tag}\r\nDate: Tue, 01 Dec 2026 00:00:00 +0000\r\nMessage-ID: <{tag}@postern.test>\r\n\r\nBody of {tag}.\r\n.a line starting with a dot\r\n..two dots\r\nlast line\r\n"
    )
}

fn envelope(from: &str, to: &str) -> Envelope {
    Envelope::new(Mailbox::parse(from).unwrap(), [Mailbox::parse(to).unwrap()])
}

/// The stored file ends with what was sent, after CRLF → LF (Postfix adds
/// Return-Path, Delivered-To and Received above it).
fn assert_body(stored: &str, sent: &str) {
    let sent_lf = sent.replace("\r\n", "\n");
    assert!(
        stored.ends_with(&sent_lf),
        "stored:\n{stored}\nsent:\n{sent_lf}"
    );
}

/// Scenario 1: client credentials → STARTTLS or implicit TLS → XOAUTH2 or
/// OAUTHBEARER → pipelined send, against Dovecot and Postfix; the Maildir
/// copy matches. Also 3: client_secret_basic (Postfix runs) and
/// client_secret_post (Dovecot runs).
pub async fn deliver_matrix<R: Runtime + Default>() {
    let Some(p) = Peers::get() else { return };
    for server in [Server::Dovecot, Server::Postfix] {
        for implicit in [false, true] {
            for mechanism in [Mechanism::XOAuth2, Mechanism::OAuthBearer] {
                let oauth = match server {
                    Server::Dovecot => p.oauth("post-client", "post-secret~2", false),
                    Server::Postfix => p.oauth("basic-client", "basic-secret~1", true),
                };
                let t = p
                    .builder::<R>(server, implicit, "localhost")
                    .oauth2(oauth)
                    .mechanism(mechanism)
                    .build()
                    .unwrap();
                let tag = tag("matrix");
                let sent = message(&tag);
                let report = t
                    .send(
                        &envelope("sender@example.com", "rcpt@example.com"),
                        sent.as_str(),
                    )
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{server:?} implicit={implicit} {mechanism:?}: {e}")
                    });
                assert!(report.all_accepted());
                let stored = p.wait_for_mail("rcpt", &tag, 1);
                assert_eq!(stored.len(), 1, "{server:?} {implicit} {mechanism:?}");
                assert_body(&stored[0], &sent);
                t.shutdown().await;
            }
        }
    }
}

/// `send_all` against the real servers: 20 messages over one connection,
/// one of them to an unknown recipient in the middle. Postfix with
/// pipelining across transactions; Dovecot without (its submission server
/// 2.3 crashes on it, which is why it is off by default). The Maildir holds
/// each accepted message once, and the refused one changed nothing for the
/// others.
pub async fn send_all_pipelined_real<R: Runtime + Default>() {
    let Some(p) = Peers::get() else { return };
    for server in [Server::Postfix, Server::Dovecot] {
        let oauth = match server {
            Server::Dovecot => p.oauth("post-client", "post-secret~2", false),
            Server::Postfix => p.oauth("basic-client", "basic-secret~1", true),
        };
        let pipelined = server == Server::Postfix;
        let t = p
            .builder::<R>(server, false, "localhost")
            .oauth2(oauth)
            .pipeline_transactions(pipelined)
            .build()
            .unwrap();
        let tag = tag("batch");
        let batch: Vec<(Envelope, postern_transport::Message)> = (0..20)
            .map(|i| {
                let to = if i == 7 {
                    "nobody@example.com"
                } else {
                    "rcpt@example.com"
                };
                let text = message(&format!("{tag}-{i:02}"));
                (envelope("sender@example.com", to), text.into())
            })
            .collect();
        let results = t.send_all(batch).await;
        let mut refused = Vec::new();
        for (i, r) in results.iter().enumerate() {
            match r {
                Ok(report) => assert!(report.all_accepted(), "{server:?} {i}"),
                Err(Error::Rejected(_)) => refused.push(i),
                Err(e) => panic!("{server:?} message {i}: {e}"),
            }
        }
        let stored = p.wait_for_mail(
            "rcpt",
            &tag,
            19 + refused.len().min(1) - refused.len().min(1),
        );
        let mut ids: Vec<String> = stored
            .iter()
            .filter_map(|m| {
                m.lines()
                    .find(|l| l.starts_with("Subject: "))
                    .map(str::to_owned)
            })
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(stored.len(), 20 - refused.len(), "{server:?}: each once");
        assert_eq!(ids.len(), stored.len(), "{server:?}: no duplicate");
        let stats = t.stats();
        assert_eq!(stats.connections_opened, 1, "{server:?}");
        if pipelined {
            assert!(stats.pipelined_transactions >= 10, "{server:?}: {stats:?}");
        } else {
            assert_eq!(stats.pipelined_transactions, 0, "{server:?}");
        }
        t.shutdown().await;
    }
}

/// Scenario 2: A JWT access token (RFC 9068 via a resource indicator), validated
/// locally by Dovecot's oauth2 passdb; too long for the AUTH line, so the
/// two-step form is used. And an opaque token (introspection) on the same
/// server.
pub async fn jwt_and_opaque_tokens<R: Runtime + Default>() {
    let Some(p) = Peers::get() else { return };
    let jwt = p
        .oauth("jwt-client", "jwt-secret~3", false)
        .extra_param("resource", "urn:postern:jwt");
    let token = postern_transport::http::fetch_token(&R::default(), &p.tls(), &jwt)
        .await
        .unwrap();
    let t = token.access_token.expose();
    assert_eq!(t.split('.').count(), 3, "a JWT");
    assert!(
        t.len() > 512,
        "long enough to need AUTH without initial response: {}",
        t.len()
    );
    for (oauth, what) in [
        (jwt, "jwt"),
        (p.oauth("post-client", "post-secret~2", false), "opaque"),
    ] {
        let t = p
            .builder::<R>(Server::Dovecot, false, "localhost")
            .oauth2(oauth)
            .mechanism(Mechanism::XOAuth2)
            .build()
            .unwrap();
        let tag = tag(what);
        t.send(
            &envelope("sender@example.com", "rcpt@example.com"),
            message(&tag),
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(p.wait_for_mail("rcpt", &tag, 1).len(), 1, "{what}");
        t.shutdown().await;
    }
}

/// Scenario 4: Short-lived tokens: a transport sending across several expiries
/// refreshes ahead and never sends an expired token; a token revoked at the
/// server costs one re-fetch and one retry.
pub async fn token_expiry_and_revocation<R: Runtime + Default>() {
    let Some(p) = Peers::get() else { return };
    let rt = R::default();
    // short-client tokens live 4 s.
    let oauth = p.short_lived_oauth();
    let t = p
        .builder::<R>(Server::Dovecot, false, "localhost")
        .oauth2(oauth)
        .pool(PoolConfig::default().max_messages_per_connection(1))
        .build()
        .unwrap();
    let tag = tag("expiry");
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_secs(10) {
        t.send(
            &envelope("sender@example.com", "rcpt@example.com"),
            message(&tag),
        )
        .await
        .unwrap_or_else(|e| panic!("after {:?}: {e}", start.elapsed()));
        sent += 1;
        rt.sleep_until(rt.now() + Duration::from_millis(700)).await;
    }
    let fetches = t.stats().token_fetches;
    assert!(
        fetches >= 3,
        "{fetches} token requests over 10 s of 4 s tokens"
    );
    assert_eq!(p.wait_for_mail("rcpt", &tag, sent).len(), sent);
    t.shutdown().await;

    // Revocation: the cached token stops working at the server; the
    // transport re-fetches once and retries once.
    // One client per runtime: the two adapters' tests run at the same time
    // and a revocation must not hit the other's token.
    let client = if std::any::type_name::<R>().contains("Tokio") {
        "revoke-a"
    } else {
        "revoke-b"
    };
    let t = p
        .builder::<R>(Server::Dovecot, false, "localhost")
        .oauth2(p.oauth(client, "revoke-secret~5", false))
        .pool(PoolConfig::default().max_messages_per_connection(1))
        .build()
        .unwrap();
    let tag = self::tag("revoke");
    t.send(
        &envelope("sender@example.com", "rcpt@example.com"),
        message(&tag),
    )
    .await
    .unwrap();
    let revoked = http_get(&format!("{}/revoke-client/{client}", p.var("ISSUER")));
    // At least this transport's token; tokens an earlier run left alive on
    // the same client are revoked with it.
    let count: u32 = revoked
        .rsplit("revoked ")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(count >= 1, "{revoked}");
    t.send(
        &envelope("sender@example.com", "rcpt@example.com"),
        message(&tag),
    )
    .await
    .unwrap();
    assert_eq!(t.stats().token_fetches, 2, "one re-fetch");
    assert_eq!(p.wait_for_mail("rcpt", &tag, 2).len(), 2);
    t.shutdown().await;
}

/// A plain HTTP GET on loopback; the whole response.
#[must_use]
pub fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = std::net::TcpStream::connect(authority).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Scenario 5: Typed failures: a bad token (decoded 334 JSON, final 535) on both
/// servers; a token the server cannot check (Dovecot 454, transient;
/// Postfix 535); a wrong client secret (`invalid_client`).
pub async fn bad_tokens_and_secrets<R: Runtime + Default>() {
    let Some(p) = Peers::get() else { return };
    for server in [Server::Dovecot, Server::Postfix] {
        let t = p
            .builder::<R>(server, false, "localhost")
            .bearer_token("sender@example.com", "not-a-valid-token")
            .mechanism(Mechanism::XOAuth2)
            .build()
            .unwrap();
        let err = t
            .send(
                &envelope("sender@example.com", "rcpt@example.com"),
                message("x"),
            )
            .await
            .unwrap_err();
        let Error::Auth(f) = &err else {
            panic!("{server:?}: {err:?}")
        };
        assert_eq!(f.reply.code(), 535, "{server:?}: {err}");
        assert_eq!(f.kind, AuthFailureKind::TokenRejected);
        let challenge = f.challenge_text().unwrap_or_default();
        assert!(challenge.contains("\"status\""), "{server:?}: {challenge}");
        assert!(!err.to_string().contains("not-a-valid-token"));
    }
    // A JWT signed by an unknown key: Dovecot cannot check it (454,
    // temporary); Postfix turns the same into 535.
    let forged = forged_jwt();
    for (server, code, kind) in [
        (Server::Dovecot, 454, AuthFailureKind::Temporary),
        (Server::Postfix, 535, AuthFailureKind::TokenRejected),
    ] {
        let t = p
            .builder::<R>(server, false, "localhost")
            .bearer_token("sender@example.com", forged.clone())
            .mechanism(Mechanism::XOAuth2)
            .build()
            .unwrap();
        let err = t
            .send(
                &envelope("sender@example.com", "rcpt@example.com"),
                message("x"),
            )
            .await
            .unwrap_err();
        let Error::Auth(f) = &err else {
            panic!("{server:?}: {err:?}")
        };
        assert_eq!((f.reply.code(), f.kind), (code, kind), "{server:?}: {err}");
        assert_eq!(err.is_transient(), code == 454);
    }
    // Wrong client secret.
    let t = p
        .builder::<R>(Server::Dovecot, false, "localhost")
        .oauth2(p.oauth("post-client", "wrong", false))
        .build()
        .unwrap();
    let err = t
        .send(
            &envelope("sender@example.com", "rcpt@example.com"),
            message("x"),
        )
        .await
        .unwrap_err();
    let Error::Token(e) = &err else {
        panic!("{err:?}")
    };
    let FetchError::OAuth(o) = &**e else {
        panic!("{err:?}")
    };
    assert_eq!(o.error, "invalid_client");
}

fn forged_jwt() -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b.encode(r#"{"alg":"RS256","typ":"JWT","kid":"unknown-key"}"#);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = b.encode(format!(r#"{{"iss":"x","sub":"sender@example.com","username":"sender@example.com","exp":{exp},"aud":"urn:postern:jwt"}}"#));
    format!("{header}.{claims}.{}", b.encode([7u8; 256]))
}

/// Scenario 6: On 127.0.0.2 Dovecot does not count the client as local: no AUTH
/// before TLS. With TLS required the transport upgrades first and logs in;
/// without TLS it refuses to send credentials at all.
pub async fn no_plaintext_credentials<R: Runtime + Default>() {
    let Some(p) = Peers::get() else { return };
    let t = p
        .builder::<R>(Server::Dovecot, false, "127.0.0.2")
        .password("alice@example.com", "pässwörd-€")
        .build()
        .unwrap();
    let tag = tag("remote");
    t.send(
        &envelope("alice@example.com", "rcpt@example.com"),
        message(&tag),
    )
    .await
    .unwrap();
    t.shutdown().await;
    let plain = Transport::<R>::builder("127.0.0.2")
        .port(p.smtp_port(Server::Dovecot, false))
        .security(Security::Plaintext)
        .password("alice@example.com", "pässwörd-€")
        .build()
        .unwrap();
    let err = plain
        .send(
            &envelope("alice@example.com", "rcpt@example.com"),
            message("x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Command(_)), "{err:?}");
}

/// Scenario 7: PLAIN and LOGIN with a UTF-8 password, on both servers.
pub async fn utf8_passwords<R: Runtime + Default>() {
    let Some(p) = Peers::get() else { return };
    for server in [Server::Dovecot, Server::Postfix] {
        for mechanism in [Mechanism::Plain, Mechanism::Login] {
            let t = p
                .builder::<R>(server, false, "localhost")
                .password("alice@example.com", "pässwörd-€")
                .mechanism(mechanism)
                .build()
                .unwrap();
            let tag = tag("utf8");
            t.send(
                &envelope("alice@example.com", "rcpt@example.com"),
                message(&tag),
            )
            .await
            .unwrap_or_else(|e| panic!("{server:?} {mechanism:?}: {e}"));
            assert_eq!(p.wait_for_mail("rcpt", &tag, 1).len(), 1);
            t.shutdown().await;
        }
    }
}

/// Scenario 8: Load: 20 tasks send 2,000 messages over one pooled transport with
/// 4-second tokens; every message arrives exactly once.
pub async fn load_with_expiring_tokens<R: Runtime + Default>() {
    let Some(p) = Peers::get() else { return };
    let oauth = p.short_lived_oauth();
    let t = p
        .builder::<R>(Server::Dovecot, false, "localhost")
        .oauth2(oauth)
        .pool(
            PoolConfig::default()
                .max_connections(8)
                .max_messages_per_connection(50),
        )
        .build()
        .unwrap();
    let run = tag("load");
    let rt = R::default();
    let (tx, rx) = async_channel::unbounded();
    const TASKS: usize = 20;
    const PER_TASK: usize = 100;
    for task in 0..TASKS {
        let t = t.clone();
        let tx = tx.clone();
        let run = run.clone();
        rt.spawn(async move {
            for i in 0..PER_TASK {
                let id = format!("{run}-{task}-{i}");
                let r = t
                    .send(
                        &envelope("sender@example.com", "load@example.com"),
                        message(&id),
                    )
                    .await;
                let _ = tx
                    .send(r.map(|_| ()).map_err(|e| format!("{id}: {e}")))
                    .await;
            }
        });
    }
    for _ in 0..TASKS * PER_TASK {
        rx.recv().await.unwrap().unwrap();
    }
    let stored = p.wait_for_mail("load", &run, TASKS * PER_TASK);
    let mut ids: Vec<String> = stored
        .iter()
        .filter_map(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("Message-ID: "))
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(ids.len(), TASKS * PER_TASK);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), TASKS * PER_TASK, "duplicates");
    t.shutdown().await;
}

/// Token requests through a real HTTPS proxy (tinyproxy): a `CONNECT`
/// tunnel to the token endpoint with TLS end to end inside it; a host in
/// `NO_PROXY` is reached directly.
pub async fn token_through_https_proxy<R: Runtime + Default>() {
    let Some(p) = Peers::get() else { return };
    let pki = crate::Pki::generate();
    let server = crate::TokenServer::start(crate::TokenServerConfig {
        clients: vec![("app".into(), "app~secret".into())],
        tls: Some(pki.localhost.server_config()),
        ..Default::default()
    })
    .unwrap();
    let mut tls = TlsOptions::default();
    tls.add_root_pem(pki.ca_pem.as_bytes()).unwrap();
    let proxy = postern_transport::Proxy::parse(p.var("PROXY_URL")).unwrap();
    let log = || std::fs::read_to_string(p.var("PROXY_LOG")).unwrap_or_default();
    // This test's tunnels only (the other runtime's test shares the proxy).
    let port = server
        .url()
        .split(':')
        .nth(2)
        .and_then(|p| p.split('/').next())
        .unwrap_or_default()
        .to_owned();
    let tunnels = || {
        log()
            .matches(&format!("CONNECT localhost:{port} HTTP/1.1"))
            .count()
    };
    let oauth = |proxy: postern_transport::Proxy| {
        OAuth2::client_credentials(
            &server.url(),
            false,
            "app",
            ClientCredential::SecretPost(Secret::new("app~secret")),
            "sender@example.com",
        )
        .unwrap()
        .proxy(Some(proxy))
    };
    let before = tunnels();
    let token = postern_transport::http::fetch_token(&R::default(), &tls, &oauth(proxy.clone()))
        .await
        .unwrap();
    assert!(token.access_token.expose().starts_with("at-"));
    assert_eq!(server.requests(), 1);
    assert_eq!(
        tunnels(),
        before + 1,
        "one tunnel through the proxy: {}",
        log()
    );

    // NO_PROXY: straight to the endpoint.
    postern_transport::http::fetch_token(
        &R::default(),
        &tls,
        &oauth(proxy.with_no_proxy("localhost")),
    )
    .await
    .unwrap();
    assert_eq!(server.requests(), 2);
    assert_eq!(tunnels(), before + 1, "no tunnel for a NO_PROXY host");
}

/// Defines one test per peer scenario for runtime `$rt`.
#[macro_export]
macro_rules! peer_tests {
    (#[$attr:meta] $rt:ty) => {
        $crate::peer_tests!(@each #[$attr] $rt;
            deliver_matrix,
            jwt_and_opaque_tokens,
            token_expiry_and_revocation,
            bad_tokens_and_secrets,
            no_plaintext_credentials,
            utf8_passwords,
            load_with_expiring_tokens,
            token_through_https_proxy,
            send_all_pipelined_real,
        );
    };
    (@each #[$attr:meta] $rt:ty; $($name:ident),* $(,)?) => {$(
        #[$attr]
        async fn $name() {
            $crate::peers::$name::<$rt>().await;
        }
    )*};
}
