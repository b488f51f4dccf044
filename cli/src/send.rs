//! `postern send`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use clap::Args;
use postern_tokio::smtp::{ContentNeeds, ContentScanner};
use postern_tokio::{Email, Envelope, Mailbox, Message, Reply, TransactionReport};
use serde_json::{Value, json};

use crate::config::Settings;
use crate::fail::{Class, Failure, failure_with_hint, usage};
use crate::setup;

/// Arguments of `postern send`.
#[derive(Args, Debug)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    pub(crate) settings: Settings,
    /// Bounce address (envelope sender) if not the From address.
    #[arg(long)]
    return_path: Option<String>,
    /// Recipient (repeat for more).
    #[arg(long, required = true)]
    to: Vec<String>,
    /// Subject.
    #[arg(long, default_value = "postern test message")]
    subject: String,
    /// Text body.
    #[arg(long, conflicts_with_all = ["body_file", "raw_file"])]
    body: Option<String>,
    /// Text body from a file.
    #[arg(long, value_name = "FILE", conflicts_with = "raw_file")]
    body_file: Option<PathBuf>,
    /// Send this RFC 5322 message as is (`-` for standard input), streamed.
    #[arg(long, value_name = "FILE")]
    raw_file: Option<PathBuf>,
    /// Print a machine-readable JSON result on standard output.
    #[arg(long)]
    json: bool,
}

fn mailbox(what: &str, s: &str) -> Result<Mailbox, Failure> {
    Mailbox::parse(s).map_err(|e| usage(format!("{what} {s:?}: {e}")))
}

pub(crate) fn reply_json(r: &Reply) -> Value {
    json!({
        "code": r.code(),
        "enhanced": r.enhanced().map(|e| e.to_string()),
        "text": r.message(),
    })
}

fn report_json(report: &TransactionReport) -> Value {
    json!({
        "mail": report.mail.as_ref().map(reply_json),
        "recipients": report.recipients.iter().map(|r| json!({
            "address": r.mailbox.to_string(),
            "accepted": r.accepted(),
            "reply": r.reply.as_ref().map(reply_json),
        })).collect::<Vec<_>>(),
        "data": report.data.as_ref().map(reply_json),
        "final": report.message.as_ref().map(reply_json),
        "bytes": report.body.output_bytes,
    })
}

/// Runs `postern send`; returns the exit class.
pub(crate) async fn run(args: SendArgs) -> Result<(), Failure> {
    let s = args.settings.clone().resolve()?;
    let from_text = s
        .from
        .clone()
        .or_else(|| s.user.clone())
        .ok_or_else(|| usage("--from is required"))?;
    let from = mailbox("--from", &from_text)?;
    let to = args
        .to
        .iter()
        .map(|t| mailbox("--to", t))
        .collect::<Result<Vec<_>, _>>()?;
    let (envelope, message) = match &args.raw_file {
        Some(path) => {
            let sender = match &args.return_path {
                Some(r) => mailbox("--return-path", r)?,
                None => from.clone(),
            };
            let mut envelope = Envelope::new(sender, to.clone());
            // A file can be read twice: what it needs (8BITMIME, SMTPUTF8)
            // is declared before it streams. Standard input cannot be.
            if path.as_os_str() != "-" {
                envelope.declare(scan_file(path)?);
            }
            let mut message = raw_message(path).await?;
            if let Some(key) = &s.dkim_key {
                if path.as_os_str() == "-" {
                    return Err(usage(
                        "--dkim-key cannot sign standard input, which is read once: give the message as a file",
                    ));
                }
                // Two passes: the signature from a first read of the file,
                // then the file again behind it.
                let dkim = setup::dkim(&s, key)?;
                let file = std::fs::File::open(path)
                    .map_err(|e| usage(format!("cannot open {}: {e}", path.display())))?;
                let header = dkim
                    .sign_read(file)
                    .map_err(|e| usage(format!("--dkim-key: {e}")))?;
                message = message.prepend(header);
            }
            (envelope, message)
        }
        None => {
            let text = match (&args.body, &args.body_file) {
                (Some(b), _) => b.clone(),
                (None, Some(p)) => std::fs::read_to_string(p)
                    .map_err(|e| usage(format!("cannot read {}: {e}", p.display())))?,
                (None, None) => "Sent with postern.\n".to_owned(),
            };
            let mut email = Email::new(from.clone())
                .subject(args.subject.clone())
                .text(text);
            if let Some(n) = &s.from_name {
                email = email.from_name(n.clone());
            }
            if let Some(r) = &s.reply_to {
                email = email.reply_to(mailbox("--reply-to", r)?);
            }
            if let Some(r) = &args.return_path {
                email = email.return_path(mailbox("--return-path", r)?);
            }
            for t in &to {
                email = email.to(t.clone());
            }
            email.build()?
        }
    };
    let transport = setup::transport(&s)?;
    let result = transport.send(&envelope, message).await;
    transport.shutdown().await;
    let (report, failure) = match result {
        Ok(report) => {
            let failure = (!report.all_accepted()).then(|| Failure {
                class: Class::Rejected,
                message: format!(
                    "refused for {} of {} recipients",
                    report.rejected().count(),
                    report.recipients.len()
                ),
                error: None,
            });
            (Some(report), failure)
        }
        Err(e) => {
            let report = match &e {
                postern_tokio::Error::Rejected(r) => Some((**r).clone()),
                _ => None,
            };
            (
                report,
                Some(failure_with_hint(e, s.tls.unwrap_or_default())),
            )
        }
    };
    if args.json {
        let mut v = json!({
            "ok": failure.is_none(),
            "report": report.as_ref().map(report_json),
        });
        if let Some(f) = &failure {
            v["error"] = json!({
                "class": f.class.name(),
                "exit_code": f.class as i32,
                "message": f.message,
                "diagnosis": f.error.as_ref().and_then(|e| e.diagnosis()).map(|d| json!({"id": d.id, "step": d.step, "fix": d.fix, "link": d.link})),
                "link": f.error.as_ref().and_then(|e| e.link()),
            });
        }
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else if let Some(r) = &report {
        for rc in &r.recipients {
            let reply = rc
                .reply
                .as_ref()
                .map(|x| format!("{} {}", x.code(), x.printable()));
            eprintln!(
                "{} {}: {}",
                if rc.accepted() {
                    "accepted"
                } else {
                    "REFUSED "
                },
                rc.mailbox,
                reply.unwrap_or_default()
            );
        }
        if let Some(m) = &r.message {
            eprintln!("server: {} {}", m.code(), m.printable());
        }
    }
    match failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

/// What the file's content needs from the server, read once in
/// [`postern_tokio::READ_CHUNK`] pieces (constant memory).
fn scan_file(path: &PathBuf) -> Result<ContentNeeds, Failure> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)
        .map_err(|e| usage(format!("cannot open {}: {e}", path.display())))?;
    let mut scan = ContentScanner::default();
    let mut buf = vec![0u8; postern_tokio::READ_CHUNK];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(scan.finish()),
            Ok(n) => scan.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(usage(format!("cannot read {}: {e}", path.display()))),
        }
    }
}

/// The raw message, streamed; with a progress line on a terminal.
async fn raw_message(path: &PathBuf) -> Result<Message, Failure> {
    if path.as_os_str() == "-" {
        return Ok(postern_tokio::message_from_reader(tokio::io::stdin()));
    }
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| usage(format!("cannot open {}: {e}", path.display())))?;
    let total = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    if std::io::stderr().is_terminal() && total > 1 << 20 {
        Ok(postern_tokio::message_from_reader(Progress {
            inner: file,
            done: 0,
            total,
            shown: 0,
        }))
    } else {
        Ok(postern_tokio::message_from_reader(file))
    }
}

/// Prints `sent X of Y MiB` on standard error as the message is read.
struct Progress<R> {
    inner: R,
    done: u64,
    total: u64,
    shown: u64,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Progress<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let n = (buf.filled().len() - before) as u64;
            self.done += n;
            let mib = self.done >> 20;
            if mib != self.shown || n == 0 {
                self.shown = mib;
                eprint!("\rsent {} of {} MiB", mib, self.total >> 20);
                if n == 0 {
                    eprintln!();
                }
            }
        }
        r
    }
}
