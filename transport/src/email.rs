//! Building a message from parts (feature `mail-builder`), for callers that do
//! not have RFC 5322 bytes yet.

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use postern_smtp::{Envelope, Mailbox, NamedMailbox};

use crate::error::Error;
use crate::message::Message;

/// A message built from parts with `mail-builder`: MIME structure, encoded
/// headers, `Date`, `Message-ID`.
///
/// The envelope comes with it: the recipients are To, Cc and Bcc (Bcc is
/// never written into the headers); the envelope sender is the return path
/// when set, else the From address.
#[derive(Clone, Debug)]
#[must_use]
pub struct Email {
    from: Mailbox,
    from_name: Option<String>,
    to: Vec<(Option<String>, Mailbox)>,
    cc: Vec<(Option<String>, Mailbox)>,
    bcc: Vec<Mailbox>,
    reply_to: Option<(Option<String>, Mailbox)>,
    return_path: Option<Mailbox>,
    subject: String,
    text: Option<String>,
    html: Option<String>,
    attachments: Vec<(String, String, Vec<u8>)>,
    headers: Vec<(String, String)>,
}

impl Email {
    /// A message from `from`: a [`Mailbox`], or a [`NamedMailbox`] such as
    /// `NamedMailbox::parse("Billing <billing@example.com>")?`.
    pub fn new(from: impl Into<NamedMailbox>) -> Self {
        let from = from.into();
        Email {
            from: from.mailbox,
            from_name: from.name,
            to: Vec::new(),
            cc: Vec::new(),
            bcc: Vec::new(),
            reply_to: None,
            return_path: None,
            subject: String::new(),
            text: None,
            html: None,
            attachments: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// The display name in From (`"Billing" <billing@example.com>`).
    pub fn from_name(mut self, name: impl Into<String>) -> Self {
        self.from_name = Some(name.into());
        self
    }

    /// Adds a To recipient (a [`Mailbox`], or a [`NamedMailbox`] with its
    /// display name).
    pub fn to(mut self, to: impl Into<NamedMailbox>) -> Self {
        let to = to.into();
        self.to.push((to.name, to.mailbox));
        self
    }

    /// Adds a To recipient with a display name.
    pub fn to_named(mut self, name: impl Into<String>, to: Mailbox) -> Self {
        self.to.push((Some(name.into()), to));
        self
    }

    /// Adds a Cc recipient.
    pub fn cc(mut self, cc: impl Into<NamedMailbox>) -> Self {
        let cc = cc.into();
        self.cc.push((cc.name, cc.mailbox));
        self
    }

    /// Adds a Cc recipient with a display name.
    pub fn cc_named(mut self, name: impl Into<String>, cc: Mailbox) -> Self {
        self.cc.push((Some(name.into()), cc));
        self
    }

    /// Adds a Bcc recipient: envelope only, never written into the headers
    /// (so a display name is not used).
    pub fn bcc(mut self, bcc: impl Into<NamedMailbox>) -> Self {
        self.bcc.push(bcc.into().mailbox);
        self
    }

    /// Adds a Bcc recipient; the name is accepted for symmetry with the
    /// other recipients and not used (Bcc is never written).
    pub fn bcc_named(self, _name: impl Into<String>, bcc: Mailbox) -> Self {
        self.bcc(bcc)
    }

    /// Where replies go (`Reply-To`).
    pub fn reply_to(mut self, address: impl Into<NamedMailbox>) -> Self {
        let address = address.into();
        self.reply_to = Some((address.name, address.mailbox));
        self
    }

    /// Where replies go, with a display name.
    pub fn reply_to_named(mut self, name: impl Into<String>, address: Mailbox) -> Self {
        self.reply_to = Some((Some(name.into()), address));
        self
    }

    /// Where bounces go: the envelope sender (`MAIL FROM`), which the
    /// receiving server records as the `Return-Path` header. Default: From.
    pub fn return_path(mut self, address: Mailbox) -> Self {
        self.return_path = Some(address);
        self
    }

    /// The subject.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = subject.into();
        self
    }

    /// The plain-text body.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// The HTML body (with a text body, both go in `multipart/alternative`).
    pub fn html(mut self, html: impl Into<String>) -> Self {
        self.html = Some(html.into());
        self
    }

    /// Adds an attachment.
    pub fn attachment(
        mut self,
        content_type: impl Into<String>,
        filename: impl Into<String>,
        data: Vec<u8>,
    ) -> Self {
        self.attachments
            .push((content_type.into(), filename.into(), data));
        self
    }

    /// Adds a header (for example `X-Mailer` or `List-Unsubscribe`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The envelope and the message bytes.
    pub fn build(&self) -> Result<(Envelope, Message), Error> {
        let recipients: Vec<Mailbox> = self
            .to
            .iter()
            .chain(&self.cc)
            .map(|(_, m)| m.clone())
            .chain(self.bcc.iter().cloned())
            .collect();
        if recipients.is_empty() {
            return Err(Error::Config("the message has no recipient".to_owned()));
        }
        let address = |name: &Option<String>, m: &Mailbox| -> Address<'static> {
            Address::new_address(name.clone(), m.to_string())
        };
        let list = |v: &[(Option<String>, Mailbox)]| -> Address<'static> {
            Address::new_list(v.iter().map(|(n, m)| address(n, m)).collect())
        };
        let mut b = MessageBuilder::new()
            .from(address(&self.from_name, &self.from))
            .subject(self.subject.clone());
        if !self.to.is_empty() {
            b = b.to(list(&self.to));
        }
        if !self.cc.is_empty() {
            b = b.cc(list(&self.cc));
        }
        if let Some((name, m)) = &self.reply_to {
            b = b.reply_to(address(name, m));
        }
        for (name, value) in &self.headers {
            if name.is_empty() || !name.bytes().all(|c| c.is_ascii_graphic() && c != b':') {
                return Err(Error::Config(format!("{name:?} is not a header name")));
            }
            if value.contains(['\r', '\n']) {
                return Err(Error::Config(format!(
                    "header {name} contains a line break"
                )));
            }
            b = b.header(
                name.clone(),
                mail_builder::headers::raw::Raw::new(value.clone()),
            );
        }
        if let Some(t) = &self.text {
            b = b.text_body(t.clone());
        }
        if let Some(h) = &self.html {
            b = b.html_body(h.clone());
        }
        for (ct, name, data) in &self.attachments {
            b = b.attachment(ct.clone(), name.clone(), data.clone());
        }
        let bytes = b
            .write_to_vec()
            .map_err(|e| Error::Config(format!("building the message: {e}")))?;
        let sender = self
            .return_path
            .clone()
            .unwrap_or_else(|| self.from.clone());
        Ok((Envelope::new(sender, recipients), Message::bytes(bytes)))
    }
}
