//! An application as a user writes it: one postern dependency line
//! (`postern-tokio` with the `dkim` feature, plus tokio as its runtime),
//! every name from `postern_tokio`. Built and run by `tests/scratch_app.rs`
//! outside the workspace.
//!
//! usage: scratch-app SMTP_PORT TOKEN_URL CA_PEM CERT_KEY DKIM_KEY

use postern_tokio::{
    Dkim, Email, Endpoint, Envelope, Mailbox, NamedMailbox, OAuth2, PoolConfig, Security,
    TlsOptions, Transport,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, token_url, ca, cert_key, dkim_key] = args.as_slice() else {
        return Err("usage: scratch-app SMTP_PORT TOKEN_URL CA_PEM CERT_KEY DKIM_KEY".into());
    };

    // Microsoft 365 app-only with a certificate, pointed at a test endpoint.
    let oauth = OAuth2::microsoft_app_certificate(
        "contoso.onmicrosoft.com",
        "scratch-app",
        &std::fs::read_to_string(cert_key)?,
        "8B:1F:00:3A:5C:77:10:9E:42:AA:0B:CD:EF:12:34:56:78:90:AB:CD",
        "reports@contoso.com",
    )?
    // A loopback test server speaks plain HTTP; real endpoints must be HTTPS.
    .with_endpoint(Endpoint::parse_with(token_url, true)?);

    let transport = Transport::builder("localhost")
        .port(port.parse()?)
        .security(Security::StartTls)
        .tls(TlsOptions::default().with_root_pem_file(ca)?)
        .oauth2(oauth)
        .dkim(Dkim::from_pem_file("contoso.com", "scratch", dkim_key)?)
        .pool(PoolConfig::default().max_connections(8))
        .build()?;

    // HTML, text and an attachment, with display names.
    let (envelope, message) = Email::new(NamedMailbox::parse("Reports <reports@contoso.com>")?)
        .to(NamedMailbox::parse("\"Doe, Jane\" <jane@example.org>")?)
        .cc(NamedMailbox::parse("Ops <ops@example.org>")?)
        .subject("Quarterly report")
        .text("The report is attached.")
        .html("<p>The report is <b>attached</b>.</p>")
        .attachment("text/csv", "q3.csv", b"region,total\nnorth,42\n".to_vec())
        .build()?;
    let report = transport.send(&envelope, message).await?;
    assert!(report.all_accepted());

    // 500 concurrent sends over the pool.
    let from = Mailbox::parse("reports@contoso.com")?;
    let mut tasks = Vec::new();
    for i in 0..500 {
        let transport = transport.clone();
        let envelope = Envelope::new(
            from.clone(),
            [Mailbox::parse(&format!("user{i}@example.org"))?],
        );
        tasks.push(tokio::spawn(async move {
            let text =
                format!("From: reports@contoso.com\r\nSubject: note {i}\r\n\r\nHello {i}.\r\n");
            transport.send(&envelope, text).await
        }));
    }
    for task in tasks {
        task.await??;
    }
    let stats = transport.stats();
    println!(
        "connections_opened={} token_fetches={}",
        stats.connections_opened, stats.token_fetches
    );
    transport.shutdown().await;
    Ok(())
}
