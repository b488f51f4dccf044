//! Microsoft 365: app-only OAuth2 (client credentials, `SMTP.SendAsApp`) and
//! XOAUTH2 to smtp.office365.com.
//!
//! MS_TENANT=contoso.onmicrosoft.com MS_CLIENT_ID=... MS_CLIENT_SECRET=... \
//! MAIL_FROM=reports@contoso.com MAIL_TO=ops@contoso.com \
//! cargo run -p postern-async-std --example async_std_microsoft

use postern_async_std::{Envelope, Mailbox, OAuth2, Secret, Security, Transport};

#[async_std::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("set {name}"));
    let from = var("MAIL_FROM")?;
    let oauth = OAuth2::microsoft_app(
        &var("MS_TENANT")?,
        &var("MS_CLIENT_ID")?,
        Secret::new(var("MS_CLIENT_SECRET")?),
        &from,
    )?;
    let transport = Transport::builder("smtp.office365.com")
        .security(Security::StartTls)
        .oauth2(oauth)
        .build()?;
    let envelope = Envelope::new(Mailbox::parse(&from)?, [Mailbox::parse(&var("MAIL_TO")?)?]);
    let message = format!("From: <{from}>\r\nSubject: postern test\r\n\r\nSent as an app.\r\n");
    match transport.send(&envelope, message).await {
        Ok(_) => eprintln!("sent"),
        // The error names the failing setup step when postern recognises it
        // (AADSTS codes, 5.7.139, 5.7.3, ...).
        Err(e) => eprintln!("failed: {e}"),
    }
    transport.shutdown().await;
    Ok(())
}
