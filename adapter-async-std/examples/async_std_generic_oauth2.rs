//! Any OAuth2-protected submission server: client credentials against its
//! token endpoint, the token mechanism the server offers, an extra CA.
//!
//! TOKEN_URL=https://auth.example.com/token CLIENT_ID=... CLIENT_SECRET=... \
//! SCOPE=mail SMTP_HOST=mail.example.com SMTP_CA_FILE=ca.pem \
//! MAIL_FROM=app@example.com MAIL_TO=you@example.com \
//! cargo run -p postern-async-std --example async_std_generic_oauth2

use postern_async_std::{
    ClientCredential, Envelope, Mailbox, OAuth2, Secret, TlsOptions, Transport,
};

#[async_std::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("set {name}"));
    let from = var("MAIL_FROM")?;
    let oauth = OAuth2::client_credentials(
        &var("TOKEN_URL")?,
        false,
        &var("CLIENT_ID")?,
        ClientCredential::SecretBasic(Secret::new(var("CLIENT_SECRET")?)),
        &from,
    )?
    .scope(var("SCOPE")?);
    let mut tls = TlsOptions::default();
    if let Ok(ca) = var("SMTP_CA_FILE") {
        tls.add_root_pem_file(ca)?;
    }
    let transport = Transport::builder(var("SMTP_HOST")?)
        .tls(tls)
        .oauth2(oauth)
        .build()?;
    let envelope = Envelope::new(Mailbox::parse(&from)?, [Mailbox::parse(&var("MAIL_TO")?)?]);
    let report = transport
        .send(
            &envelope,
            format!("From: <{from}>\r\nSubject: hi\r\n\r\nHello.\r\n"),
        )
        .await?;
    for r in report.recipients {
        eprintln!("{}: {:?}", r.mailbox, r.reply.map(|r| r.code()));
    }
    transport.shutdown().await;
    Ok(())
}
