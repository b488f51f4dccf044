//! Stream a large message from a file: read in 64 KiB chunks while it is
//! sent, so memory stays constant whatever the size.
//!
//! SMTP_HOST=... SMTP_USER=... SMTP_PASSWORD=... MAIL_TO=... \
//! cargo run -p postern-async-std --example async_std_large_file -- message.eml

use postern_async_std::{Envelope, Mailbox, Transport, message_from_reader};

#[async_std::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("set {name}"));
    let path = std::env::args().nth(1).ok_or("usage: large_file FILE")?;
    let user = var("SMTP_USER")?;
    let transport = Transport::builder(var("SMTP_HOST")?)
        .password(&user, var("SMTP_PASSWORD")?)
        .build()?;
    let file = async_std::fs::File::open(&path).await?;
    let envelope = Envelope::new(Mailbox::parse(&user)?, [Mailbox::parse(&var("MAIL_TO")?)?]);
    let report = transport.send(&envelope, message_from_reader(file)).await?;
    eprintln!(
        "{} bytes sent, {} dots stuffed",
        report.body.output_bytes, report.body.dots_stuffed
    );
    transport.shutdown().await;
    Ok(())
}
