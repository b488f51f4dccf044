//! `postern demo`: the whole flow against loopback peers, no network needed.

use postern_test_support::{
    Pki, ServerTls, SmtpServer, SmtpServerConfig, TokenServer, TokenServerConfig, Tokens,
};
use postern_tokio::{
    ClientCredential, Email, Mailbox, OAuth2, Secret, Security, TlsOptions, Transport,
};

use crate::fail::{Failure, usage};

const CLIENT_ID: &str = "demo-app";
const CLIENT_SECRET: &str = "demo-client-secret";
const SENDER: &str = "reports@postern.test";

/// Starts a token endpoint and a STARTTLS submission server that accepts
/// only XOAUTH2 with tokens from that endpoint, then sends one message with
/// client credentials → STARTTLS → XOAUTH2 → pipelined MAIL/RCPT/DATA.
pub(crate) async fn run() -> Result<(), Failure> {
    let io = |e: std::io::Error| usage(format!("cannot start the demo peers: {e}"));
    let pki = Pki::generate();
    let tokens = Tokens::default();
    let token_server = TokenServer::start(TokenServerConfig {
        clients: vec![(CLIENT_ID.into(), CLIENT_SECRET.into())],
        tokens: tokens.clone(),
        ..Default::default()
    })
    .map_err(io)?;
    let store = std::env::temp_dir().join(format!("postern-demo-{}", std::process::id()));
    std::fs::create_dir_all(&store).map_err(io)?;
    let smtp = SmtpServer::start(SmtpServerConfig {
        tls: ServerTls::StartTls(pki.localhost.server_config()),
        tokens,
        require_auth: true,
        mechanisms: "XOAUTH2".into(),
        store_dir: Some(store.clone()),
        transcript: true,
        ..Default::default()
    })
    .map_err(io)?;
    println!("postern demo: everything runs on this machine, over loopback.");
    println!(
        "  token endpoint  {} (client credentials)",
        token_server.url()
    );
    println!(
        "  SMTP submission localhost:{} (STARTTLS with a throwaway CA, AUTH XOAUTH2 only)",
        smtp.port()
    );
    println!();

    let oauth = OAuth2::client_credentials(
        &token_server.url(),
        true,
        CLIENT_ID,
        ClientCredential::SecretPost(Secret::new(CLIENT_SECRET)),
        SENDER,
    )?
    .scope("https://postern.test/.default");
    let mut tls = TlsOptions::default();
    tls.add_root_pem(pki.ca_pem.as_bytes())?;
    let transport = Transport::builder("localhost")
        .port(smtp.port())
        .security(Security::StartTls)
        .tls(tls)
        .oauth2(oauth)
        .build()?;
    let mailbox = |s: &str| Mailbox::parse(s).map_err(|e| usage(e.to_string()));
    let (envelope, message) = Email::new(mailbox(SENDER)?)
        .from_name("postern demo")
        .to(mailbox("alice@example.com")?)
        .to(mailbox("bob@example.com")?)
        .subject("Hello from postern")
        .text("This message went through client credentials, STARTTLS, XOAUTH2 and a pipelined send.\n")
        .build()?;
    let report = transport.send(&envelope, message).await?;
    transport.shutdown().await;

    println!("SMTP transcript (as the server saw it; credentials redacted):");
    for line in smtp.transcript() {
        println!("  {line}");
    }
    println!();
    println!("token requests: {}", token_server.requests());
    for r in &report.recipients {
        let reply = r
            .reply
            .as_ref()
            .map(|x| format!("{} {}", x.code(), x.printable()));
        println!("recipient {}: {}", r.mailbox, reply.unwrap_or_default());
    }
    if let Some(m) = report.message.as_ref() {
        println!("server: {} {}", m.code(), m.printable());
    }
    match smtp.messages().first().and_then(|m| m.path.clone()) {
        Some(path) => println!("message stored at {}", path.display()),
        None => return Err(usage("the demo server did not store the message")),
    }
    Ok(())
}
