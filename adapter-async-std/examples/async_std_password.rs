//! Send with a password (AUTH PLAIN/LOGIN) over STARTTLS.
//!
//! SMTP_HOST=smtp.example.com SMTP_USER=me@example.com SMTP_PASSWORD=... \
//! MAIL_TO=you@example.com cargo run -p postern-async-std --example async_std_password

use postern_async_std::{Envelope, Mailbox, Security, Transport};

#[async_std::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("set {name}"));
    let user = var("SMTP_USER")?;
    let transport = Transport::builder(var("SMTP_HOST")?)
        .security(Security::StartTls)
        .password(&user, var("SMTP_PASSWORD")?)
        .build()?;
    let envelope = Envelope::new(Mailbox::parse(&user)?, [Mailbox::parse(&var("MAIL_TO")?)?]);
    let message =
        format!("From: <{user}>\r\nSubject: postern test\r\n\r\nSent with a password.\r\n");
    let report = transport.send(&envelope, message).await?;
    eprintln!(
        "accepted: {}",
        report.message.map(|r| r.message()).unwrap_or_default()
    );
    transport.shutdown().await;
    Ok(())
}
