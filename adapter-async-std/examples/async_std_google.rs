//! Gmail / Google Workspace: a stored refresh token (scope
//! `https://mail.google.com/`), XOAUTH2 to smtp.gmail.com over implicit TLS.
//!
//! GOOGLE_CLIENT_ID=... GOOGLE_CLIENT_SECRET=... GOOGLE_REFRESH_TOKEN=... \
//! MAIL_FROM=me@gmail.com MAIL_TO=you@example.com \
//! cargo run -p postern-async-std --example async_std_google

use postern_async_std::{Envelope, Mailbox, OAuth2, Secret, Security, Transport};

#[async_std::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("set {name}"));
    let from = var("MAIL_FROM")?;
    let oauth = OAuth2::google_refresh_token(
        &var("GOOGLE_CLIENT_ID")?,
        Secret::new(var("GOOGLE_CLIENT_SECRET")?),
        Secret::new(var("GOOGLE_REFRESH_TOKEN")?),
        &from,
    )?
    .on_refresh_token_rotated(|_new| eprintln!("refresh token rotated: store the new one"));
    let transport = Transport::builder("smtp.gmail.com")
        .security(Security::ImplicitTls)
        .oauth2(oauth)
        .build()?;
    let envelope = Envelope::new(Mailbox::parse(&from)?, [Mailbox::parse(&var("MAIL_TO")?)?]);
    let message = format!("From: <{from}>\r\nSubject: postern test\r\n\r\nSent with XOAUTH2.\r\n");
    transport.send(&envelope, message).await?;
    transport.shutdown().await;
    Ok(())
}
