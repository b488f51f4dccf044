//! The transport scenarios, written once against [`postern_transport`] and
//! run by `postern-tokio` and `postern-async-std` on their own runtime. Each
//! panics with a message when the transport misbehaves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::time::Duration;

use postern_transport::runtime::Runtime;
use postern_transport::{
    AuthFailureKind, ClientCredential, Envelope, Error, Mailbox, MailboxLimits, MemoryStore,
    Message, OAuth2, PoolConfig, Rate, Secret, Security, Sharing, Store, Timeouts, TlsOptions,
    Transport, TransportBuilder,
};

use crate::{
    Generated, Pki, ServerCert, ServerTls, SmtpServer, SmtpServerConfig, SmtpSink, TokenServer,
    TokenServerConfig, Tokens, Virtual, join, lock,
};

const FROM: &str = "sender@example.com";
const MESSAGE: &str = "From: <sender@example.com>\r\nTo: <rcpt@example.com>\r\nSubject: hello\r\n\r\nHello.\r\n.leading dot\r\n";

fn mailbox(s: &str) -> Mailbox {
    Mailbox::parse(s).unwrap()
}

fn envelope(to: &[&str]) -> Envelope {
    Envelope::new(mailbox(FROM), to.iter().map(|t| mailbox(t)))
}

fn roots(pki: &Pki) -> TlsOptions {
    let mut t = TlsOptions::default();
    assert_eq!(t.add_root_pem(pki.ca_pem.as_bytes()).unwrap(), 1);
    t
}

fn tls_server(cert: &ServerCert, implicit: bool, mut config: SmtpServerConfig) -> SmtpServer {
    let c = cert.server_config();
    config.tls = if implicit {
        ServerTls::Implicit(c)
    } else {
        ServerTls::StartTls(c)
    };
    SmtpServer::start(config).unwrap()
}

fn builder<R: Runtime>(rt: R, host: &str, port: u16, security: Security) -> TransportBuilder<R> {
    TransportBuilder::new(rt, host)
        .port(port)
        .security(security)
        .timeouts(Timeouts::uniform(Duration::from_secs(20)))
        .connect_timeout(Duration::from_secs(10))
}

/// Sends [`MESSAGE`] to `rcpt@example.com`; panics on failure.
async fn send_one<R: Runtime>(t: &Transport<R>) -> postern_transport::TransactionReport {
    t.send(&envelope(&["rcpt@example.com"]), MESSAGE)
        .await
        .unwrap()
}

/// Sends [`MESSAGE`] to `rcpt@example.com`, expecting an error.
async fn send_err<R: Runtime>(t: &Transport<R>) -> Error {
    t.send(&envelope(&["rcpt@example.com"]), MESSAGE)
        .await
        .unwrap_err()
}

/// The received message, with the client's line ends and dot-stuffing undone.
fn assert_received(server: &SmtpServer, index: usize, to: &[&str]) {
    let got = &server.messages()[index];
    assert_eq!(got.from, FROM);
    assert_eq!(got.to, to);
    assert_eq!(got.data.as_deref(), Some(MESSAGE.as_bytes()));
}

/// Plaintext, no AUTH, pipelined MAIL/RCPT/DATA; one recipient refused:
/// the report says which.
pub async fn plaintext_partial_delivery<R: Runtime + Default>() {
    let server = SmtpServer::start(SmtpServerConfig {
        reject_recipients: vec!["nobody@example.com".into()],
        ..Default::default()
    })
    .unwrap();
    let t = builder(
        R::default(),
        "127.0.0.1",
        server.port(),
        Security::Plaintext,
    )
    .build()
    .unwrap();
    let report = t
        .send(
            &envelope(&["rcpt@example.com", "nobody@example.com"]),
            MESSAGE,
        )
        .await
        .unwrap();
    assert!(!report.all_accepted());
    let refused: Vec<_> = report.rejected().map(|r| r.mailbox.to_string()).collect();
    assert_eq!(refused, ["nobody@example.com"]);
    assert_eq!(
        report
            .rejected()
            .next()
            .unwrap()
            .reply
            .as_ref()
            .unwrap()
            .code(),
        550
    );
    assert_received(&server, 0, &["rcpt@example.com"]);

    // Every recipient refused: an error carrying the report.
    let err = t
        .send(&envelope(&["nobody@example.com"]), MESSAGE)
        .await
        .unwrap_err();
    let Error::Rejected(report) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(report.recipients[0].reply.as_ref().unwrap().code(), 550);
    // The connection survived the refusal and was reused.
    send_one(&t).await;
    assert_eq!(server.connections(), 1);
    t.shutdown().await;
}

/// STARTTLS with the test CA, AUTH PLAIN with a password.
pub async fn starttls_password<R: Runtime + Default>() {
    let pki = Pki::generate();
    let server = tls_server(
        &pki.localhost,
        false,
        SmtpServerConfig {
            users: vec![("alice".into(), "s3cret~pw".into())],
            require_auth: true,
            ..Default::default()
        },
    );
    let t = builder(R::default(), "localhost", server.port(), Security::StartTls)
        .tls(roots(&pki))
        .password("alice", "s3cret~pw")
        .build()
        .unwrap();
    send_one(&t).await;
    let auths = server.auths();
    assert_eq!(auths.len(), 1);
    assert_eq!(
        (
            auths[0].mechanism.as_str(),
            auths[0].user.as_str(),
            auths[0].ok
        ),
        ("PLAIN", "alice", true)
    );
    assert_eq!(server.messages()[0].user.as_deref(), Some("alice"));
    assert_received(&server, 0, &["rcpt@example.com"]);

    // A wrong password: an AUTH error, classified, no retry.
    let bad = builder(R::default(), "localhost", server.port(), Security::StartTls)
        .tls(roots(&pki))
        .password("alice", "wrong")
        .build()
        .unwrap();
    let err = send_err(&bad).await;
    let Error::Auth(f) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(f.kind, AuthFailureKind::CredentialsRejected);
    assert!(!err.to_string().contains("wrong"), "{err}");
    assert_eq!(server.auths().len(), 2);
    t.shutdown().await;
}

/// Implicit TLS (port-465 style), XOAUTH2 with a token from the token
/// endpoint (client credentials, secret in the body).
pub async fn implicit_tls_oauth2<R: Runtime + Default>() {
    let pki = Pki::generate();
    let tokens = Tokens::default();
    let token_server = TokenServer::start(TokenServerConfig {
        clients: vec![("app".into(), "app~secret".into())],
        tokens: tokens.clone(),
        ..Default::default()
    })
    .unwrap();
    let server = tls_server(
        &pki.localhost,
        true,
        SmtpServerConfig {
            tokens: tokens.clone(),
            require_auth: true,
            ..Default::default()
        },
    );
    let oauth = app_oauth(&token_server, "app~secret").scope("https://mail.example/.default");
    let t = builder(
        R::default(),
        "127.0.0.1",
        server.port(),
        Security::ImplicitTls,
    )
    .tls(roots(&pki))
    .oauth2(oauth)
    .build()
    .unwrap();
    for _ in 0..3 {
        send_one(&t).await;
    }
    assert_eq!(token_server.requests(), 1);
    assert_eq!(t.stats().token_fetches, 1);
    let auths = server.auths();
    assert_eq!(auths.len(), 1, "one AUTH, then the connection is reused");
    // The core prefers the standard OAUTHBEARER when both are offered.
    assert_eq!(
        (auths[0].mechanism.as_str(), auths[0].user.as_str()),
        ("OAUTHBEARER", FROM)
    );
    assert_eq!(server.connections(), 1);
    assert_eq!(t.stats().connections_reused, 2);

    // XOAUTH2 forced (what Exchange Online offers), secret in HTTP Basic,
    // over a fresh transport.
    let t2 = builder(
        R::default(),
        "127.0.0.1",
        server.port(),
        Security::ImplicitTls,
    )
    .tls(roots(&pki))
    .oauth2(
        OAuth2::client_credentials(
            &token_server.url(),
            true,
            "app",
            ClientCredential::SecretBasic(Secret::new("app~secret")),
            FROM,
        )
        .unwrap(),
    )
    .mechanism(postern_transport::Mechanism::XOAuth2)
    .build()
    .unwrap();
    send_one(&t2).await;
    assert_eq!(server.auths()[1].mechanism, "XOAUTH2");
    t.shutdown().await;
    t2.shutdown().await;
}

/// Certificates that must be refused: wrong host name, expired, unknown
/// issuer. The dangerous option accepts them.
pub async fn bad_certificates_rejected<R: Runtime + Default>() {
    let pki = Pki::generate();
    for (cert, implicit, expect) in [
        (&pki.wrong_host, false, "NotValidForName"),
        (&pki.expired, true, "Expired"),
    ] {
        let server = tls_server(cert, implicit, SmtpServerConfig::default());
        let security = if implicit {
            Security::ImplicitTls
        } else {
            Security::StartTls
        };
        let t = builder(R::default(), "localhost", server.port(), security)
            .tls(roots(&pki))
            .build()
            .unwrap();
        let err = send_err(&t).await;
        let Error::Tls { source, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(format!("{source:?}").contains(expect), "{source:?}");
        assert!(server.messages().is_empty());

        let dangerous = TlsOptions::default().dangerous_accept_invalid_certs(true);
        let t = builder(R::default(), "localhost", server.port(), security)
            .tls(dangerous)
            .build()
            .unwrap();
        send_one(&t).await;
        assert_eq!(server.messages().len(), 1);
        t.shutdown().await;
    }
    // Unknown issuer: the default roots do not include the test CA.
    let server = tls_server(&pki.localhost, false, SmtpServerConfig::default());
    let t = builder(R::default(), "localhost", server.port(), Security::StartTls)
        .build()
        .unwrap();
    let err = send_err(&t).await;
    let Error::Tls { source, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        format!("{source:?}").contains("UnknownIssuer"),
        "{source:?}"
    );
}

/// The loopback token endpoint's client `app`, client credentials, secret
/// in the body.
fn app_oauth(token_server: &TokenServer, secret: &str) -> OAuth2 {
    OAuth2::client_credentials(
        &token_server.url(),
        true,
        "app",
        ClientCredential::SecretPost(Secret::new(secret)),
        FROM,
    )
    .unwrap()
}

fn oauth_setup(lifetime: u64) -> (Pki, Tokens, TokenServer, SmtpServer) {
    let pki = Pki::generate();
    let tokens = Tokens::default();
    let token_server = TokenServer::start(TokenServerConfig {
        clients: vec![("app".into(), "app~secret".into())],
        tokens: tokens.clone(),
        lifetime_secs: lifetime,
        ..Default::default()
    })
    .unwrap();
    let server = tls_server(
        &pki.localhost,
        false,
        SmtpServerConfig {
            tokens: tokens.clone(),
            require_auth: true,
            ..Default::default()
        },
    );
    (pki, tokens, token_server, server)
}

fn oauth_transport<R: Runtime>(
    rt: R,
    pki: &Pki,
    token_server: &TokenServer,
    server: &SmtpServer,
    pool: PoolConfig,
    secret: &str,
) -> Transport<R> {
    let oauth = app_oauth(token_server, secret);
    builder(rt, "localhost", server.port(), Security::StartTls)
        .tls(roots(pki))
        .oauth2(oauth)
        .pool(pool)
        .build()
        .unwrap()
}

/// The server stops accepting the cached token: the transport invalidates
/// it, fetches one fresh token and authenticates once more. When the fresh
/// one is refused too, it gives up (no loop). On virtual time, over
/// in-memory pipes (STARTTLS still real).
pub async fn token_rejected_then_refreshed_once<R: Runtime>(vt: Virtual<R>) {
    let (pki, tokens, token_server, server) = oauth_setup(3600);
    vt.serve_tokens(&token_server);
    vt.serve_smtp(&server);
    let one_per_connection = PoolConfig::default().max_messages_per_connection(1);
    let t = oauth_transport(
        vt.clone(),
        &pki,
        &token_server,
        &server,
        one_per_connection,
        "app~secret",
    );
    send_one(&t).await;
    assert_eq!(token_server.requests(), 1);

    tokens.revoke_all();
    send_one(&t).await;
    assert_eq!(
        token_server.requests(),
        2,
        "exactly one refresh after the rejection"
    );
    let oks: Vec<bool> = server.auths().iter().map(|a| a.ok).collect();
    assert_eq!(oks, [true, false, true]);

    // A server that refuses every token: one retry, then the error.
    let other = tls_server(
        &pki.localhost,
        false,
        SmtpServerConfig {
            tokens: Tokens::default(),
            ..Default::default()
        },
    );
    vt.serve_smtp(&other);
    let t2 = oauth_transport(
        vt.clone(),
        &pki,
        &token_server,
        &other,
        PoolConfig::default(),
        "app~secret",
    );
    let before = token_server.requests();
    let err = send_err(&t2).await;
    let Error::Auth(f) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(f.kind, AuthFailureKind::TokenRejected);
    assert!(f.challenge_text().unwrap().contains("invalid_token"));
    assert_eq!(
        token_server.requests() - before,
        2,
        "first token + one refresh"
    );
    assert_eq!(other.auths().len(), 2, "two AUTH attempts, no loop");
    let rendered = format!("{err} {err:?}");
    for issued in 1..=tokens.issued() {
        assert!(
            !rendered.contains(&format!("at-{issued}-")),
            "token leaked: {rendered}"
        );
    }
    t.shutdown().await;
    t2.shutdown().await;
}

/// Refresh ahead: a token due for refresh is still used while the next one
/// is fetched in the background; a later connection uses the new token
/// without waiting for a fetch. On virtual time: the 2 s token lifetime
/// passes in two clock steps.
pub async fn token_refreshed_ahead_in_background<R: Runtime>(vt: Virtual<R>) {
    let (pki, tokens, token_server, server) = oauth_setup(2);
    vt.serve_tokens(&token_server);
    vt.serve_smtp(&server);
    let oauth = app_oauth(&token_server, "app~secret").cache_config(
        postern_transport::CacheConfig::default().expiry_margin(Duration::from_millis(100)),
    );
    let t = builder(vt.clone(), "localhost", server.port(), Security::StartTls)
        .tls(roots(&pki))
        .oauth2(oauth)
        .pool(PoolConfig::default().max_messages_per_connection(2))
        .build()
        .unwrap();
    send_one(&t).await;
    assert_eq!(token_server.requests(), 1);
    // Past half the 2 s lifetime: due for refresh, still valid.
    vt.advance(Duration::from_millis(1300));
    send_one(&t).await;
    vt.until("the background refresh", || token_server.requests() == 2)
        .await;
    // The first token has expired now. A new connection (the first one
    // reached its two messages) authenticates with the refreshed token, with
    // no fetch of its own.
    vt.advance(Duration::from_millis(800));
    send_one(&t).await;
    assert_eq!(server.connections(), 2);
    assert_eq!(token_server.requests(), 2);
    assert_eq!(tokens.issued(), 2);
    assert!(server.auths().iter().all(|a| a.ok));
    t.shutdown().await;
}

/// The token endpoint over HTTPS (verified with the same roots as SMTP),
/// then an Exchange-style `535 5.7.139` (SMTP AUTH disabled): a
/// configuration refusal, so no token refresh and no second AUTH; the error
/// carries the diagnosis.
pub async fn https_token_endpoint_and_auth_disabled<R: Runtime + Default>() {
    let pki = Pki::generate();
    let tokens = Tokens::default();
    let token_server = TokenServer::start(TokenServerConfig {
        clients: vec![("app".into(), "app~secret".into())],
        tokens: tokens.clone(),
        tls: Some(pki.localhost.server_config()),
        ..Default::default()
    })
    .unwrap();
    assert!(token_server.url().starts_with("https://"));
    let server = tls_server(
        &pki.localhost,
        false,
        SmtpServerConfig {
            tokens: tokens.clone(),
            ..Default::default()
        },
    );
    let t = builder(R::default(), "localhost", server.port(), Security::StartTls)
        .tls(roots(&pki))
        .oauth2(app_oauth(&token_server, "app~secret"))
        .build()
        .unwrap();
    send_one(&t).await;
    assert_eq!(token_server.requests(), 1);

    let disabled = tls_server(
        &pki.localhost,
        false,
        SmtpServerConfig {
            tokens,
            auth_reply: Some(
                "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [AM0PR01CA0001.eurprd01.prod.exchangelabs.com]".into(),
            ),
            ..Default::default()
        },
    );
    let t2 = builder(
        R::default(),
        "localhost",
        disabled.port(),
        Security::StartTls,
    )
    .tls(roots(&pki))
    .oauth2(app_oauth(&token_server, "app~secret"))
    .build()
    .unwrap();
    let err = send_err(&t2).await;
    let Error::Auth(f) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(f.kind, AuthFailureKind::Configuration);
    assert_eq!(disabled.auths().len(), 1, "no second AUTH");
    assert_eq!(token_server.requests(), 2, "one token for t2, no refresh");
    assert_eq!(err.diagnosis().unwrap().id, "ms.smtp.auth_disabled");
    assert!(err.to_string().contains("ms.smtp.auth_disabled"), "{err}");

    // A token endpoint whose certificate is for another name is refused.
    let wrong = TokenServer::start(TokenServerConfig {
        clients: vec![("app".into(), "app~secret".into())],
        tls: Some(pki.wrong_host.server_config()),
        ..Default::default()
    })
    .unwrap();
    let t3 = builder(R::default(), "localhost", server.port(), Security::StartTls)
        .tls(roots(&pki))
        .oauth2(app_oauth(&wrong, "app~secret"))
        .build()
        .unwrap();
    let err = send_err(&t3).await;
    let Error::Token(e) = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(&**e, postern_transport::oauth::FetchError::Transport(m) if m.contains("TLS")),
        "{err}"
    );
    assert_eq!(wrong.requests(), 0);
    t.shutdown().await;
    t2.shutdown().await;
}

/// A wrong client secret: the token endpoint's AADSTS7000215 comes back as a
/// typed error with its diagnosis; the SMTP server never sees AUTH.
pub async fn token_endpoint_error<R: Runtime + Default>() {
    let (pki, _tokens, token_server, server) = oauth_setup(3600);
    let t = oauth_transport(
        R::default(),
        &pki,
        &token_server,
        &server,
        PoolConfig::default(),
        "not-the-secret",
    );
    let err = send_err(&t).await;
    let Error::Token(e) = &err else {
        panic!("{err:?}")
    };
    let postern_transport::oauth::FetchError::OAuth(e) = &**e else {
        panic!("{err:?}")
    };
    assert_eq!(e.error_codes, [7000215]);
    let text = err.to_string();
    assert!(text.contains("AADSTS7000215"), "{text}");
    assert!(!text.contains("not-the-secret"), "{text}");
    assert!(server.auths().is_empty());
    // The failure is cached with backoff: an immediate second send does not
    // hammer the endpoint.
    let err2 = send_err(&t).await;
    assert!(matches!(err2, Error::Token(_)), "{err2:?}");
    assert_eq!(token_server.requests(), 1);
}

/// 1,000 concurrent sends on one transport: one token request in all, at
/// most `max_connections` SMTP connections, every message delivered.
pub async fn concurrent_sends_fetch_once<R: Runtime + Default>() {
    let (pki, _tokens, token_server, server) = oauth_setup(3600);
    let pool = PoolConfig::default()
        .max_connections(4)
        .max_messages_per_connection(1000);
    let t = oauth_transport(
        R::default(),
        &pki,
        &token_server,
        &server,
        pool,
        "app~secret",
    );
    let rt = R::default();
    let (tx, rx) = async_channel::unbounded();
    const N: usize = 1000;
    for i in 0..N {
        let t = t.clone();
        let tx = tx.clone();
        rt.spawn(async move {
            let to = format!("rcpt{i}@example.com");
            let r = t.send(&envelope(&[&to]), MESSAGE).await;
            let _ = tx.send(r.map(|_| ()).map_err(|e| e.to_string())).await;
        });
    }
    for _ in 0..N {
        rx.recv().await.unwrap().unwrap();
    }
    assert_eq!(token_server.requests(), 1, "single flight across tasks");
    assert_eq!(server.messages().len(), N);
    assert!(
        server.connections() <= 4,
        "{} connections",
        server.connections()
    );
    t.shutdown().await;
}

/// Two OAuth2 transports (two processes' worth of token caches) sharing
/// `store`.
fn shared_pair<R: Runtime + Default>(
    pki: &Pki,
    token_server: &TokenServer,
    server: &SmtpServer,
    store: &std::sync::Arc<dyn Store>,
) -> (Transport<R>, Transport<R>) {
    let make = || {
        builder(R::default(), "localhost", server.port(), Security::StartTls)
            .tls(roots(pki))
            .oauth2(app_oauth(token_server, "app~secret"))
            .share(Sharing::new(std::sync::Arc::clone(store)))
            .build()
            .unwrap()
    };
    (make(), make())
}

/// Two transports (two processes' worth of caches) sharing one store: one
/// token request serves both.
pub async fn shared_tokens_one_fetch<R: Runtime + Default>() {
    shared_tokens_one_fetch_on::<R>(std::sync::Arc::new(MemoryStore::new())).await;
}

/// [`shared_tokens_one_fetch`] through `store` (a Redis or file store).
pub async fn shared_tokens_one_fetch_on<R: Runtime + Default>(store: std::sync::Arc<dyn Store>) {
    let (pki, _tokens, token_server, server) = oauth_setup(3600);
    let (a, b) = shared_pair::<R>(&pki, &token_server, &server, &store);
    a.send(&envelope(&["rcpt@example.com"]), MESSAGE)
        .await
        .unwrap();
    b.send(&envelope(&["rcpt@example.com"]), MESSAGE)
        .await
        .unwrap();
    assert_eq!(
        token_server.requests(),
        1,
        "the second transport adopted the token"
    );
    assert_eq!(a.stats().token_fetches + b.stats().token_fetches, 1);
    a.shutdown().await;
    b.shutdown().await;
}

/// A token endpoint's `429` with `Retry-After` seen by one transport holds
/// the other too: it waits, then fetches once, instead of asking at once.
pub async fn shared_retry_after_holds_every_transport<R: Runtime + Default>() {
    let (pki, _tokens, token_server, server) = oauth_setup(3600);
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(MemoryStore::new());
    let (a, b) = shared_pair::<R>(&pki, &token_server, &server, &store);
    token_server.force_busy(Some(2));
    match a.send(&envelope(&["rcpt@example.com"]), MESSAGE).await {
        Err(Error::Token(e)) => assert!(e.is_transient(), "{e}"),
        other => panic!("a 429 did not fail the token step: {other:?}"),
    }
    assert_eq!(token_server.requests(), 1);
    token_server.force_busy(None);
    let started = std::time::Instant::now();
    b.send(&envelope(&["rcpt@example.com"]), MESSAGE)
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the other transport did not wait for Retry-After: {:?}",
        started.elapsed()
    );
    assert_eq!(token_server.requests(), 2, "one request after the wait");
    a.shutdown().await;
    b.shutdown().await;
}

/// Limits shared by two transports through one store, and the replies the
/// core classifies: a `432 4.3.2` is backed off with jitter and the message
/// sent once; the recipient quota refuses before connecting; a `554 5.2.0`
/// quota refusal stops the mailbox for the other transport too.
pub async fn shared_limits_and_replies<R: Runtime + Default>() {
    let script: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>> =
        std::sync::Arc::default();
    let server = SmtpServer::start(SmtpServerConfig {
        mail_script: std::sync::Arc::clone(&script),
        ..Default::default()
    })
    .unwrap();
    let pair = |limits: MailboxLimits| {
        let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(MemoryStore::new());
        let make = || {
            builder(
                R::default(),
                "127.0.0.1",
                server.port(),
                Security::Plaintext,
            )
            .share(Sharing::new(std::sync::Arc::clone(&store)).limits(limits))
            .build()
            .unwrap()
        };
        (make(), make())
    };
    let (a, b) = pair(MailboxLimits::none().recipients(Some(Rate::per_day(6))));
    lock(&script).push_back(
        "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded [Hostname=X]".into(),
    );
    let started = std::time::Instant::now();
    a.send(&envelope(&["rcpt@example.com"]), MESSAGE)
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "no backoff after 432: {:?}",
        started.elapsed()
    );
    assert_eq!(server.messages().len(), 1, "sent once");
    let four = [
        "r1@example.com",
        "r2@example.com",
        "r3@example.com",
        "r4@example.com",
    ];
    b.send(&envelope(&four), MESSAGE).await.unwrap();
    let connections = server.connections();
    match b
        .send(&envelope(&["r5@example.com", "r6@example.com"]), MESSAGE)
        .await
    {
        Err(e @ Error::LimitReached { .. }) => assert!(e.is_transient(), "{e}"),
        other => panic!("7 recipients of 6 went: {other:?}"),
    }
    assert_eq!(
        server.connections(),
        connections,
        "refused before connecting"
    );
    assert_eq!(server.messages().len(), 2);
    a.shutdown().await;
    b.shutdown().await;

    let (a, b) = pair(MailboxLimits::none().recipients(Some(Rate::per_day(1000))));
    lock(&script).push_back(
        "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException".into(),
    );
    match a.send(&envelope(&["rcpt@example.com"]), MESSAGE).await {
        Err(e @ Error::Rejected(_)) => assert!(e.limit_signal().is_some(), "{e}"),
        other => panic!("the quota refusal was not reported: {other:?}"),
    }
    let connections = server.connections();
    match b.send(&envelope(&["rcpt@example.com"]), MESSAGE).await {
        Err(Error::LimitReached { .. }) => {}
        other => panic!("the other transport sent after a quota refusal: {other:?}"),
    }
    assert_eq!(server.connections(), connections);
    assert_eq!(server.messages().len(), 2);
    a.shutdown().await;
    b.shutdown().await;
}

/// A message rate of 3 per 2 s: the 4th and the 7th message wait for the
/// next window.
pub async fn shared_message_rate<R: Runtime + Default>() {
    let server = SmtpServer::start(SmtpServerConfig::default()).unwrap();
    let rate = Rate {
        count: 3,
        per: Duration::from_secs(2),
    };
    let t = builder(
        R::default(),
        "127.0.0.1",
        server.port(),
        Security::Plaintext,
    )
    .share(
        Sharing::new(std::sync::Arc::new(MemoryStore::new()))
            .limits(MailboxLimits::none().messages(Some(rate))),
    )
    .build()
    .unwrap();
    let started = std::time::Instant::now();
    for _ in 0..7 {
        t.send(&envelope(&["rcpt@example.com"]), MESSAGE)
            .await
            .unwrap();
    }
    // Three windows are touched, so the last message went at least one
    // whole window after the first.
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(t.stats().rate_waits >= 2, "{:?}", t.stats());
    assert_eq!(server.messages().len(), 7);
    t.shutdown().await;
}

/// What every [`Store`] must do: compare-and-swap against the value read
/// (absent included), delete, counters per window, values kept apart by
/// key.
pub async fn store_conformance(store: &dyn Store) {
    let key = format!("conformance:{}", std::process::id());
    let other = format!("{key}:other");
    assert_eq!(store.get(&key).await.unwrap(), None);
    assert!(store.swap(&key, None, Some(b"one")).await.unwrap());
    assert!(
        !store.swap(&key, None, Some(b"two")).await.unwrap(),
        "swap over a value expected absent"
    );
    assert!(!store.swap(&key, Some(b"zero"), Some(b"two")).await.unwrap());
    assert!(store.swap(&key, Some(b"one"), Some(b"two")).await.unwrap());
    assert_eq!(store.get(&key).await.unwrap().as_deref(), Some(&b"two"[..]));
    assert_eq!(store.get(&other).await.unwrap(), None);
    let binary: Vec<u8> = (0..=255).collect();
    assert!(store.swap(&other, None, Some(&binary)).await.unwrap());
    assert_eq!(store.get(&other).await.unwrap(), Some(binary.clone()));
    assert!(store.swap(&key, Some(b"two"), None).await.unwrap());
    assert_eq!(store.get(&key).await.unwrap(), None);
    assert!(store.swap(&other, Some(&binary), None).await.unwrap());
    let keep = Duration::from_secs(60);
    let counter = format!("{key}:count");
    assert_eq!(store.add(&counter, 7, 1, keep).await.unwrap(), 1);
    assert_eq!(store.add(&counter, 7, 5, keep).await.unwrap(), 6);
    assert_eq!(
        store.add(&counter, 8, 1, keep).await.unwrap(),
        1,
        "a new window starts at zero"
    );
    assert_eq!(
        store.add(&counter, 8, 0, keep).await.unwrap(),
        1,
        "n = 0 reads"
    );
    assert_eq!(store.add(&counter, 8, 2, keep).await.unwrap(), 3);
    let earlier = store.add(&counter, 7, 0, keep).await.unwrap();
    assert!(earlier == 0 || earlier == 6, "window 7 read as {earlier}");
    assert_eq!(
        store.add(&counter, 8, 0, keep).await.unwrap(),
        3,
        "reading an earlier window leaves the current one alone"
    );
}

/// Pool behaviour: sequential sends reuse one connection; past
/// `noop_after` a NOOP checks it first; a session the server dropped while
/// idle is replaced transparently. On virtual time: idle periods are clock
/// steps, and the server drops its idle sessions when told to.
pub async fn pool_reuse_and_stale_connections<R: Runtime>(vt: Virtual<R>) {
    let server = SmtpServer::start(SmtpServerConfig::default()).unwrap();
    vt.serve_smtp(&server);
    // The server ends every session idle now with 421, as after its idle
    // timeout, until `n` sessions in all were ended that way.
    let drop_idle = |n: u64| {
        let server = &server;
        vt.until("the server to drop its idle sessions", move || {
            server.close_idle_sessions();
            server.idle_closed() >= n
        })
    };
    let pool = PoolConfig::default().noop_after(Duration::from_secs(3600));
    let t = builder(vt.clone(), "127.0.0.1", server.port(), Security::Plaintext)
        .pool(pool)
        .build()
        .unwrap();
    for _ in 0..5 {
        send_one(&t).await;
    }
    assert_eq!(server.connections(), 1);
    assert_eq!(t.stats().connections_reused, 4);

    // The server drops the idle session (421); the next send notices and
    // resends on a new connection.
    drop_idle(1).await;
    vt.advance(Duration::from_millis(600));
    send_one(&t).await;
    assert_eq!(server.connections(), 2);
    assert_eq!(server.messages().len(), 6);

    // With a short noop_after the dead session is found by NOOP instead.
    let t2 = builder(vt.clone(), "127.0.0.1", server.port(), Security::Plaintext)
        .pool(PoolConfig::default().noop_after(Duration::from_millis(100)))
        .build()
        .unwrap();
    send_one(&t2).await;
    vt.advance(Duration::from_millis(150));
    send_one(&t2).await;
    assert_eq!(server.connections(), 3, "alive after NOOP: reused");
    drop_idle(3).await;
    vt.advance(Duration::from_millis(600));
    send_one(&t2).await;
    assert_eq!(server.connections(), 4, "dead at NOOP: replaced");

    // Idle past idle_timeout: closed with QUIT, not reused.
    let t3 = builder(vt.clone(), "127.0.0.1", server.port(), Security::Plaintext)
        .pool(PoolConfig::default().idle_timeout(Duration::from_millis(100)))
        .build()
        .unwrap();
    send_one(&t3).await;
    let quits = server.quits();
    vt.advance(Duration::from_millis(150));
    send_one(&t3).await;
    assert_eq!(server.connections(), 6, "expired idle connection replaced");
    vt.until("the QUIT of the expired connection", || {
        server.quits() > quits
    })
    .await;
    assert_eq!(server.quits(), quits + 1, "expired connection got QUIT");

    // Shutdown ends idle sessions with QUIT and refuses new sends.
    let quits = server.quits();
    // (t's idle session was already dropped by the server: its QUIT fails
    // quietly and shutdown still returns.)
    t.shutdown().await;
    t3.shutdown().await;
    assert_eq!(server.quits(), quits + 1);
    let err = send_err(&t).await;
    assert!(matches!(err, Error::Shutdown), "{err:?}");
    t2.shutdown().await;
}

/// Every session ends cleanly, as the SMTP core decides: after a refused
/// AUTH with QUIT, after a body the client refuses mid-DATA without another
/// command, after delivery at shutdown with QUIT; and each time the TLS
/// session ends with `close_notify` before the TCP close (the server's log
/// shows no "connection non-properly terminated"). On virtual time over
/// in-memory pipes, TLS real.
pub async fn sessions_end_cleanly<R: Runtime>(vt: Virtual<R>) {
    let pki = Pki::generate();
    let server = tls_server(
        &pki.localhost,
        false,
        SmtpServerConfig {
            users: vec![("alice".into(), "s3cret~pw".into())],
            require_auth: true,
            ..Default::default()
        },
    );
    vt.serve_smtp(&server);
    let ends = |clean: u64| {
        let server = &server;
        vt.until("the end of the TLS session", move || {
            let (c, u) = server.tls_closes();
            c + u >= clean
        })
    };

    // AUTH refused: the session is still usable, so QUIT, then close_notify.
    let bad = builder(vt.clone(), "localhost", server.port(), Security::StartTls)
        .tls(roots(&pki))
        .password("alice", "wrong")
        .build()
        .unwrap();
    let err = send_err(&bad).await;
    assert!(matches!(err, Error::Auth(_)), "{err:?}");
    ends(1).await;
    assert_eq!(server.quits(), 1, "QUIT after the refused AUTH");
    assert_eq!(
        server.tls_closes(),
        (1, 0),
        "close_notify after the refused AUTH"
    );

    // A body the client refuses after DATA began (a 1,200-octet line): DATA
    // cannot be cancelled, so the session is abandoned, still with
    // close_notify, and nothing is delivered.
    let t = builder(vt.clone(), "localhost", server.port(), Security::StartTls)
        .tls(roots(&pki))
        .password("alice", "s3cret~pw")
        .build()
        .unwrap();
    let long = format!("Subject: long\r\n\r\n{}\r\n", "x".repeat(1200));
    let err = t
        .send(&envelope(&["rcpt@example.com"]), long)
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "a refused body never succeeds: {err}");
    ends(2).await;
    assert_eq!(server.quits(), 1, "no command after the abandoned DATA");
    assert_eq!(
        server.tls_closes(),
        (2, 0),
        "close_notify after the abandoned DATA"
    );
    assert!(server.messages().is_empty());

    // A delivery, then shutdown: QUIT and close_notify.
    send_one(&t).await;
    t.shutdown().await;
    ends(3).await;
    assert_eq!(server.quits(), 2);
    assert_eq!(server.tls_closes(), (3, 0));
    bad.shutdown().await;
}

/// The server takes the message and the connection dies before its reply to
/// the final `.`: the send reports that the message may have been
/// delivered, calls it not transient (a plain retry could duplicate it),
/// and the transport does not resend it on its own.
pub async fn unconfirmed_message_is_not_resent<R: Runtime>(vt: Virtual<R>) {
    let server = SmtpServer::start(SmtpServerConfig {
        keep_bodies: true,
        drop_after_data: true,
        ..Default::default()
    })
    .unwrap();
    vt.serve_smtp(&server);
    let t = builder(vt.clone(), "127.0.0.1", server.port(), Security::Plaintext)
        .build()
        .unwrap();
    let err = send_err(&t).await;
    assert!(err.may_have_been_delivered(), "{err:?}");
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("may have been delivered"), "{err}");
    assert_eq!(server.messages().len(), 1, "the server did store it");
    assert_eq!(server.connections(), 1, "and it was not sent again");
    t.shutdown().await;
}

/// A caller's own rustls configuration is used as is: its roots decide.
pub async fn custom_rustls_config<R: Runtime>(vt: Virtual<R>) {
    use postern_transport::rustls;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let pki = Pki::generate();
    let server = tls_server(
        &pki.localhost,
        false,
        SmtpServerConfig {
            users: vec![("alice".into(), "s3cret~pw".into())],
            require_auth: true,
            ..Default::default()
        },
    );
    vt.serve_smtp(&server);
    let config = |trust_test_ca: bool| {
        let mut roots = rustls::RootCertStore::empty();
        if trust_test_ca {
            for cert in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
        }
        let provider = std::sync::Arc::new(postern_transport::crypto_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsOptions::from_rustls_config(std::sync::Arc::new(config))
    };
    let t = builder(vt.clone(), "localhost", server.port(), Security::StartTls)
        .tls(config(true))
        .password("alice", "s3cret~pw")
        .build()
        .unwrap();
    send_one(&t).await;
    let untrusting = builder(vt.clone(), "localhost", server.port(), Security::StartTls)
        .tls(config(false))
        .password("alice", "s3cret~pw")
        .build()
        .unwrap();
    let err = send_err(&untrusting).await;
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    t.shutdown().await;
}

/// A server that accepts the connection and never greets: the greeting
/// timeout fires and names its phase. On virtual time: the 200 ms pass in
/// one clock step once the client waits.
pub async fn greeting_timeout<R: Runtime>(vt: Virtual<R>) {
    // A peer that holds its end of the pipe and never writes.
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = std::sync::Arc::clone(&held);
    vt.serve(2525, move || {
        let (client, server) = tokio::io::duplex(1024);
        crate::lock(&keep).push(server);
        client
    });
    let mut timeouts = Timeouts::uniform(Duration::from_secs(20));
    timeouts.greeting = Duration::from_millis(200);
    let t = builder(vt.clone(), "127.0.0.1", 2525, Security::Plaintext)
        .timeouts(timeouts)
        .build()
        .unwrap();
    let clock = async {
        vt.until("the client to wait for the greeting", || {
            vt.pending_timers() > 0
        })
        .await;
        vt.advance(Duration::from_millis(199));
        assert_eq!(vt.pending_timers(), 1, "not due before 200 ms");
        vt.advance(Duration::from_millis(1));
    };
    let (err, ()) = join(send_err(&t), clock).await;
    let Error::Smtp(e) = &err else {
        panic!("{err:?}")
    };
    let postern_transport::smtp::Error::Timeout { phase } = &**e else {
        panic!("{err:?}")
    };
    assert_eq!(*phase, postern_transport::smtp::Phase::Greeting);
    assert!(!lock(&held).is_empty(), "the client connected");
}

/// Streams a generated message of `size` bytes (CHUNKING on or off) and
/// checks the server received exactly it. Returns the process's peak RSS.
pub async fn stream_large<R: Runtime + Default>(size: u64, chunking: bool) -> Option<u64> {
    let server = SmtpServer::start(SmtpServerConfig {
        keep_bodies: false,
        chunking,
        ..Default::default()
    })
    .unwrap();
    let t = builder(
        R::default(),
        "127.0.0.1",
        server.port(),
        Security::Plaintext,
    )
    .build()
    .unwrap();
    let generated = Generated::new(size);
    let expected = generated.expected();
    let report = t
        .send(&envelope(&["rcpt@example.com"]), Message::reader(generated))
        .await
        .unwrap();
    assert!(report.all_accepted());
    let got = &server.messages()[0];
    assert_eq!((got.size, got.digest), expected);
    t.shutdown().await;
    crate::peak_rss()
}

/// The test server's no-copy DATA path (bodies neither hashed nor kept, as
/// in the throughput benchmark) counts exactly the un-stuffed size, over
/// STARTTLS, for several messages on one connection.
pub async fn stream_discarded<R: Runtime + Default>(sizes: &[u64]) {
    let pki = Pki::generate();
    let server = SmtpServer::start(SmtpServerConfig {
        tls: ServerTls::StartTls(pki.localhost.server_config()),
        keep_bodies: false,
        hash_bodies: false,
        ..Default::default()
    })
    .unwrap();
    let t = builder(R::default(), "localhost", server.port(), Security::StartTls)
        .tls(roots(&pki))
        .build()
        .unwrap();
    for size in sizes {
        let report = t
            .send(
                &envelope(&["rcpt@example.com"]),
                Message::reader(Generated::new(*size)),
            )
            .await
            .unwrap();
        assert!(report.all_accepted());
    }
    let got: Vec<u64> = server.messages().iter().map(|m| m.size).collect();
    let want: Vec<u64> = sizes
        .iter()
        .map(|s| Generated::new(*s).expected().0)
        .collect();
    assert_eq!(got, want);
    t.shutdown().await;
}

/// Against Postfix's real `smtp-sink`: pooled sends over one connection and
/// a streamed message. Returns `false` when smtp-sink is not installed and
/// was not required.
pub async fn real_smtp_sink<R: Runtime + Default>(messages: usize, stream_size: u64) -> bool {
    let Some(sink) = SmtpSink::start().unwrap() else {
        return false;
    };
    let t = builder(R::default(), "127.0.0.1", sink.port(), Security::Plaintext)
        .build()
        .unwrap();
    for i in 0..messages {
        let to = format!("rcpt{i}@example.com");
        let report = t
            .send(&envelope(&[&to, "second@example.com"]), MESSAGE)
            .await
            .unwrap();
        assert!(report.all_accepted());
    }
    let s = t.stats();
    assert_eq!(s.connections_opened, 1);
    assert_eq!(s.connections_reused, messages as u64 - 1);
    let report = t
        .send(
            &envelope(&["big@example.com"]),
            Message::reader(Generated::new(stream_size)),
        )
        .await
        .unwrap();
    assert!(report.all_accepted());
    assert_eq!(report.body.input_bytes, stream_size, "{:?}", report.body);
    assert!(report.body.dots_stuffed > 0);
    t.shutdown().await;
    true
}

/// `send_all`: six messages over one connection, the next envelope
/// pipelined after each final `.`; the refused one (third) does not change
/// the others, and everything arrives once, in order.
pub async fn send_all_pipelined<R: Runtime + Default>() {
    let server = SmtpServer::start(SmtpServerConfig {
        reject_recipients: vec!["nobody@example.com".into()],
        ..Default::default()
    })
    .unwrap();
    let t = builder(
        R::default(),
        "127.0.0.1",
        server.port(),
        Security::Plaintext,
    )
    .pipeline_transactions(true)
    .build()
    .unwrap();
    let batch: Vec<(Envelope, Message)> = (0..6)
        .map(|i| {
            let to = if i == 2 {
                "nobody@example.com"
            } else {
                "rcpt@example.com"
            };
            let text = format!("Subject: batch {i}\r\n\r\n.body {i}\r\n");
            (envelope(&[to]), Message::from(text))
        })
        .collect();
    let results = t.send_all(batch).await;
    assert_eq!(results.len(), 6);
    for (i, r) in results.iter().enumerate() {
        if i == 2 {
            assert!(matches!(r, Err(Error::Rejected(_))), "{i}: {r:?}");
        } else {
            assert!(r.as_ref().is_ok_and(|r| r.all_accepted()), "{i}: {r:?}");
        }
    }
    let subjects: Vec<String> = server
        .messages()
        .iter()
        .map(|m| {
            let data = String::from_utf8(m.data.clone().unwrap()).unwrap();
            assert!(data.contains("\r\n.body "), "un-stuffed: {data}");
            data.lines().next().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        subjects,
        [
            "Subject: batch 0",
            "Subject: batch 1",
            "Subject: batch 3",
            "Subject: batch 4",
            "Subject: batch 5"
        ]
    );
    assert_eq!(server.connections(), 1);
    let stats = t.stats();
    // Every message after the first (and after the refused one's RSET,
    // which needs its reply) started before the previous reply.
    assert!(stats.pipelined_transactions >= 3, "{stats:?}");
    t.shutdown().await;
}

/// A transaction relayed step by step: upstream's reply to MAIL, to each
/// RCPT (one refused) and to the message, each as it comes; the refused
/// connection is reused across transactions and
/// the content arrives canonical and stuffed once.
pub async fn relay_step_by_step<R: Runtime + Default>() {
    use postern_transport::{RelayStart, smtp::ReversePath};
    let server = SmtpServer::start(SmtpServerConfig {
        reject_recipients: vec!["nobody@example.com".into()],
        reject_senders: vec!["refused@example.com".into()],
        ..Default::default()
    })
    .unwrap();
    let t = builder(
        R::default(),
        "127.0.0.1",
        server.port(),
        Security::Plaintext,
    )
    .build()
    .unwrap();
    for round in 0..2 {
        let mut head = envelope(&["rcpt@example.com"]);
        head.recipients.clear();
        let RelayStart::Open(mut txn, mail) = t.relay(&head).await.unwrap() else {
            panic!("MAIL refused");
        };
        assert!(mail.is_positive());
        let ok = txn
            .rcpt(Mailbox::parse("rcpt@example.com").unwrap())
            .await
            .unwrap();
        assert!(ok.is_positive(), "{ok:?}");
        let refused = txn
            .rcpt(Mailbox::parse("nobody@example.com").unwrap())
            .await
            .unwrap();
        assert_eq!(refused.code(), 550, "{refused:?}");
        let postern_transport::RelayData::Body(mut txn) = txn.data().await.unwrap() else {
            panic!("DATA refused");
        };
        for piece in [
            &b"Subject: relay "[..],
            format!("{round}\r\n\r\n").as_bytes(),
            b"one\n.\ntwo\r\n",
        ] {
            txn.write(piece).await.unwrap();
        }
        let report = txn.finish().await.unwrap();
        assert_eq!(report.accepted().count(), 1);
    }
    // A transaction given up before its content: nothing is delivered and
    // the connection stays usable.
    let mut head = envelope(&["rcpt@example.com"]);
    head.recipients.clear();
    let RelayStart::Open(mut txn, _) = t.relay(&head).await.unwrap() else {
        panic!("MAIL refused");
    };
    txn.rcpt(Mailbox::parse("rcpt@example.com").unwrap())
        .await
        .unwrap();
    txn.abandon().await;
    let messages = server.messages();
    assert_eq!(messages.len(), 2);
    for (round, m) in messages.iter().enumerate() {
        let data = String::from_utf8(m.data.clone().unwrap()).unwrap();
        assert_eq!(
            data,
            format!("Subject: relay {round}\r\n\r\none\r\n.\r\ntwo\r\n")
        );
    }
    assert_eq!(server.connections(), 1);
    // A refused sender opens nothing, and the connection stays usable.
    let mut bounce = envelope(&["rcpt@example.com"]);
    bounce.recipients.clear();
    bounce.from = ReversePath::Mailbox(Mailbox::parse("refused@example.com").unwrap());
    match t.relay(&bounce).await.unwrap() {
        RelayStart::Refused(reply) => assert!(!reply.is_positive(), "{reply:?}"),
        RelayStart::Open(..) => panic!("MAIL should be refused"),
        _ => unreachable!("no other outcome"),
    }
    t.shutdown().await;
}

/// `send_all` when the server stores each message and drops the connection
/// before replying: every message is stored exactly once and reported as
/// unconfirmed; the ones that had not been sent went again on fresh
/// connections, none twice.
pub async fn send_all_connection_dies<R: Runtime>(vt: Virtual<R>) {
    let server = SmtpServer::start(SmtpServerConfig {
        drop_after_data: true,
        ..Default::default()
    })
    .unwrap();
    vt.serve_smtp(&server);
    let t = builder(vt.clone(), "127.0.0.1", server.port(), Security::Plaintext)
        .build()
        .unwrap();
    let batch: Vec<(Envelope, Message)> = (0..3)
        .map(|i| {
            let text = format!("Subject: dies {i}\r\n\r\nbody\r\n");
            (envelope(&["rcpt@example.com"]), Message::from(text))
        })
        .collect();
    let results = t.send_all(batch).await;
    for (i, r) in results.iter().enumerate() {
        let e = r.as_ref().unwrap_err();
        assert!(e.may_have_been_delivered(), "{i}: {e}");
        assert!(!e.is_transient(), "{i}: never retried blindly");
    }
    let mut subjects: Vec<String> = server
        .messages()
        .iter()
        .map(|m| {
            String::from_utf8_lossy(m.data.as_ref().unwrap())
                .lines()
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        ["Subject: dies 0", "Subject: dies 1", "Subject: dies 2"]
    );
    assert_eq!(server.connections(), 3);
}

/// Defines one `#[test]` per scenario for runtime `$rt`, with `$attr` the
/// runtime's test attribute (`tokio::test(...)`, `async_std::test`).
#[macro_export]
macro_rules! transport_tests {
    (#[$attr:meta] $rt:ty) => {
        $crate::transport_tests!(@each #[$attr] $rt;
            plaintext_partial_delivery,
            starttls_password,
            implicit_tls_oauth2,
            bad_certificates_rejected,
            token_endpoint_error,
            https_token_endpoint_and_auth_disabled,
            concurrent_sends_fetch_once,
            send_all_pipelined,
            relay_step_by_step,
            shared_tokens_one_fetch,
            shared_retry_after_holds_every_transport,
            shared_limits_and_replies,
            shared_message_rate,
        );
        $crate::transport_tests!(@virtual #[$attr] $rt;
            token_rejected_then_refreshed_once,
            token_refreshed_ahead_in_background,
            pool_reuse_and_stale_connections,
            greeting_timeout,
            sessions_end_cleanly,
            unconfirmed_message_is_not_resent,
            custom_rustls_config,
            send_all_connection_dies,
        );

        #[$attr]
        async fn stream_with_data_and_with_bdat() {
            $crate::scenarios::stream_large::<$rt>(8 << 20, false).await;
            $crate::scenarios::stream_large::<$rt>(8 << 20, true).await;
            $crate::scenarios::stream_discarded::<$rt>(&[0, 1_000, 65_537, 8 << 20]).await;
        }

        #[$attr]
        async fn real_smtp_sink() {
            if !$crate::scenarios::real_smtp_sink::<$rt>(50, 16 << 20).await {
                eprintln!("smtp-sink not installed; set POSTERN_REAL_PEERS=1 to require it");
            }
        }
    };
    (@each #[$attr:meta] $rt:ty; $($name:ident),* $(,)?) => {$(
        #[$attr]
        async fn $name() {
            $crate::scenarios::$name::<$rt>().await;
        }
    )*};
    (@virtual #[$attr:meta] $rt:ty; $($name:ident),* $(,)?) => {$(
        #[$attr]
        async fn $name() {
            let rt: $rt = ::std::default::Default::default();
            $crate::scenarios::$name($crate::Virtual::new(rt)).await;
        }
    )*};
}

/// Defines the 1 GiB streaming test for runtime `$rt`: peak RSS of the test
/// process must stay under 32 MiB. Put it in a test binary of its own so the
/// peak is this test's.
#[macro_export]
macro_rules! large_message_test {
    (#[$attr:meta] $rt:ty) => {
        #[$attr]
        async fn one_gib_in_constant_memory() {
            let peak = $crate::scenarios::stream_large::<$rt>(1 << 30, false).await;
            // And to Postfix's smtp-sink, a real server, when installed.
            $crate::scenarios::real_smtp_sink::<$rt>(1, 1 << 30).await;
            if let Some(peak) = $crate::peak_rss().or(peak) {
                eprintln!(
                    "peak RSS after streaming 1 GiB: {:.1} MiB",
                    peak as f64 / 1048576.0
                );
                assert!(peak < 32 << 20, "peak RSS {peak} bytes");
            }
        }
    };
}

/// Streams a message from a file opened by `open` with the runtime's own
/// file type; LF line ends and a leading dot arrive as CRLF, un-stuffed.
pub async fn message_from_file<R, F, Fut>(open: F)
where
    R: Runtime + Default,
    F: FnOnce(std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = Message>,
{
    let server = SmtpServer::start(SmtpServerConfig::default()).unwrap();
    let dir = std::env::temp_dir().join(format!(
        "postern-file-{}-{}",
        std::process::id(),
        std::any::type_name::<R>().len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("message.eml");
    std::fs::write(&path, "Subject: from a file\n\nline one\n.dot line\n").unwrap();
    let message = open(path).await;
    let t = builder(
        R::default(),
        "127.0.0.1",
        server.port(),
        Security::Plaintext,
    )
    .build()
    .unwrap();
    t.send(&envelope(&["rcpt@example.com"]), message)
        .await
        .unwrap();
    assert_eq!(
        server.messages()[0].data.as_deref(),
        Some(&b"Subject: from a file\r\n\r\nline one\r\n.dot line\r\n"[..])
    );
    std::fs::remove_dir_all(&dir).unwrap();
    t.shutdown().await;
}
