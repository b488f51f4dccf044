//! Per-mailbox sending limits: the providers' published numbers, the
//! fixed-window arithmetic every instance sharing a mailbox agrees on, and
//! what a reply says about them. Pure functions; the transport keeps the
//! counts (in one process, or in a store shared by many).
//!
//! Sources:
//! - Microsoft 365: "Exchange Online limits", *Sending limits* and *SMTP AUTH
//!   client submission* (learn.microsoft.com/office365/servicedescriptions/
//!   exchange-online-service-description/exchange-online-limits): 10,000
//!   recipients per day, 30 messages per minute, 3 concurrent connections
//!   per mailbox for SMTP AUTH client submission.
//! - Google Workspace: "Gmail sending limits in Google Workspace"
//!   (support.google.com/a/answer/166852): 2,000 messages per day, 10,000
//!   total recipients per day, 100 recipients per message sent through
//!   `smtp.gmail.com`. Google publishes no per-minute or connection limit
//!   for SMTP submission, so the preset sets none.
//!
//! Windows are fixed (minute `k` is `[k·60 s, (k+1)·60 s)` of Unix time), so
//! instances on different machines count in the same window without talking
//! to each other. Google counts over a rolling 24 hours; a fixed day can let
//! up to twice the daily count through within 24 hours across a window
//! boundary, so the Google preset keeps a margin below the published figure.

use std::time::Duration;

use crate::reply::Reply;

/// A count per time window: at most `count` in each window of `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// How many per window.
    pub count: u64,
    /// The window's length (at least one second).
    pub per: Duration,
}

impl Rate {
    /// `count` per minute.
    #[must_use]
    pub const fn per_minute(count: u64) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(60),
        }
    }

    /// `count` per day.
    #[must_use]
    pub const fn per_day(count: u64) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(86_400),
        }
    }

    fn window_ms(&self) -> u64 {
        u64::try_from(self.per.as_millis())
            .unwrap_or(u64::MAX)
            .max(1000)
    }

    /// The window `now_ms` (Unix milliseconds) falls in: its index (the same
    /// on every machine with a correct clock) and when it ends.
    #[must_use]
    pub fn window(&self, now_ms: u64) -> Window {
        let len = self.window_ms();
        let index = now_ms / len;
        Window {
            index,
            ends_at_ms: index.saturating_add(1).saturating_mul(len),
        }
    }

    /// Whether `taking` more fit in a window that already counts `before`
    /// (the count before this caller's increment).
    #[must_use]
    pub fn admits(&self, before: u64, taking: u64) -> bool {
        before.saturating_add(taking) <= self.count
    }
}

/// One fixed window of a [`Rate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Unix milliseconds divided by the window length.
    pub index: u64,
    /// When the next window starts (Unix milliseconds).
    pub ends_at_ms: u64,
}

/// The limits of one mailbox, counted across every instance that sends
/// through it. `None` switches a limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MailboxLimits {
    /// SMTP connections open at once.
    pub connections: Option<u32>,
    /// Messages per window; a message over it waits for the next window.
    pub messages: Option<Rate>,
    /// Recipients per window; a message over it is refused until the window
    /// rolls over ([`Admission::Exhausted`]).
    pub recipients: Option<Rate>,
}

impl MailboxLimits {
    /// No limits.
    #[must_use]
    pub fn none() -> Self {
        MailboxLimits::default()
    }

    /// Microsoft 365 (Exchange Online): 3 connections, 30 messages per
    /// minute, 10,000 recipients per day.
    #[must_use]
    pub fn microsoft365() -> Self {
        MailboxLimits {
            connections: Some(3),
            messages: Some(Rate::per_minute(30)),
            recipients: Some(Rate::per_day(10_000)),
        }
    }

    /// Google Workspace (`smtp.gmail.com`): 2,000 messages and 10,000
    /// recipients per day, each kept at 90 % because Google's day is rolling
    /// and these windows are fixed. No connection limit is published.
    #[must_use]
    pub fn google_workspace() -> Self {
        MailboxLimits {
            connections: None,
            messages: Some(Rate::per_day(1_800)),
            recipients: Some(Rate::per_day(9_000)),
        }
    }

    /// A preset by name: `microsoft365` (or `m365`), `google` (or
    /// `google-workspace`, `gmail`), `none` (or `off`).
    #[must_use]
    pub fn preset(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "microsoft365" | "m365" | "office365" | "exchange-online" => Some(Self::microsoft365()),
            "google" | "google-workspace" | "gmail" => Some(Self::google_workspace()),
            "none" | "off" => Some(Self::none()),
            _ => None,
        }
    }

    /// `true` when every limit is off.
    #[must_use]
    pub fn is_off(&self) -> bool {
        self.connections.is_none() && self.messages.is_none() && self.recipients.is_none()
    }

    /// Sets the connection limit.
    #[must_use]
    pub fn connections(mut self, limit: Option<u32>) -> Self {
        self.connections = limit;
        self
    }

    /// Sets the message rate.
    #[must_use]
    pub fn messages(mut self, rate: Option<Rate>) -> Self {
        self.messages = rate;
        self
    }

    /// Sets the recipient rate.
    #[must_use]
    pub fn recipients(mut self, rate: Option<Rate>) -> Self {
        self.recipients = rate;
        self
    }
}

/// Whether a message may go now, given the counts of its windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Send it.
    Go,
    /// The message rate is used up: wait until this instant (Unix ms), then
    /// ask again.
    WaitUntil(u64),
    /// The recipient quota is used up: sending through this mailbox stops
    /// until this instant (Unix ms).
    Exhausted(u64),
}

/// Judges one message of `recipients` recipients against the limits, given
/// each window's count **before** it (`messages_before`,
/// `recipients_before`; `None` when the limit is off or the count unknown).
#[must_use]
pub fn admit(
    limits: &MailboxLimits,
    now_ms: u64,
    recipients: u64,
    messages_before: Option<u64>,
    recipients_before: Option<u64>,
) -> Admission {
    if let (Some(rate), Some(before)) = (limits.recipients, recipients_before)
        && !rate.admits(before, recipients)
    {
        return Admission::Exhausted(rate.window(now_ms).ends_at_ms);
    }
    if let (Some(rate), Some(before)) = (limits.messages, messages_before)
        && !rate.admits(before, 1)
    {
        return Admission::WaitUntil(rate.window(now_ms).ends_at_ms);
    }
    Admission::Go
}

/// What a server's reply says about the mailbox's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitSignal {
    /// Too many connections or submissions at once (`432 4.3.2`, Exchange's
    /// "sender thread limit exceeded", `421 4.3.2`, `451 4.7.500`): back off
    /// with jitter ([`backoff`]) and try again.
    Concurrency,
    /// The sending quota is used up (`554 5.2.0` quota, `550 5.4.5` Gmail's
    /// daily limit, `552 5.2.2` quota): stop sending through this mailbox
    /// until the window rolls over.
    QuotaExceeded,
}

/// Classifies `reply`: `None` for replies that say nothing about limits.
#[must_use]
pub fn classify(reply: &Reply) -> Option<LimitSignal> {
    let code = reply.code();
    let enhanced = reply.enhanced().map(|e| (e.class, e.subject, e.detail));
    let text = reply.raw_text().to_ascii_lowercase();
    let says = |needle: &str| memfind(&text, needle.as_bytes());
    match (code, enhanced) {
        (432 | 421 | 451 | 450, Some((4, 3, 2))) => Some(LimitSignal::Concurrency),
        (451, Some((4, 7, 500))) => Some(LimitSignal::Concurrency),
        (_, _) if reply.is_transient() && says("thread limit") => Some(LimitSignal::Concurrency),
        (550..=559, Some((5, 2, 0))) if says("quota") || says("limit") => {
            Some(LimitSignal::QuotaExceeded)
        }
        (550..=559, Some((5, 4, 5))) => Some(LimitSignal::QuotaExceeded),
        (550..=559, _) if says("sending limit") || says("daily user sending quota") => {
            Some(LimitSignal::QuotaExceeded)
        }
        _ => None,
    }
}

fn memfind(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The delay before attempt `attempt` (0-based) after a
/// [`LimitSignal::Concurrency`]: 1 s doubling to at most 32 s, with "full
/// jitter" (a uniform share of it chosen by `random`), so instances that
/// were refused together do not come back together.
#[must_use]
pub fn backoff(attempt: u32, random: u64) -> Duration {
    let cap_ms: u64 = 1000u64 << attempt.min(5);
    Duration::from_millis(cap_ms / 2 + random % (cap_ms / 2 + 1))
}

/// The value of a connection slot held by `holder` until `until_ms` (Unix
/// ms), as kept in a shared store.
#[must_use]
pub fn slot_value(holder: &str, until_ms: u64) -> Vec<u8> {
    format!("{until_ms} {holder}").into_bytes()
}

/// Whether a connection slot whose stored value is `value` (`None`: never
/// taken or released) may be taken at `now_ms`: free, lapsed, or unreadable
/// (a value this code did not write is not a live holder).
#[must_use]
pub fn slot_is_free(value: Option<&[u8]>, now_ms: u64) -> bool {
    let Some(v) = value else { return true };
    let until = std::str::from_utf8(v)
        .ok()
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    until.is_none_or(|u| u <= now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, line: &str) -> Reply {
        Reply::new(code, &[line]).unwrap()
    }

    #[test]
    fn windows_are_the_same_everywhere() {
        let r = Rate::per_minute(30);
        let w = r.window(125_000);
        assert_eq!(w.index, 2);
        assert_eq!(w.ends_at_ms, 180_000);
        assert_eq!(r.window(179_999).index, 2);
        assert_eq!(r.window(180_000).index, 3);
        assert!(r.admits(29, 1));
        assert!(!r.admits(30, 1));
    }

    #[test]
    fn admission() {
        let l = MailboxLimits::microsoft365();
        assert_eq!(admit(&l, 61_000, 1, Some(0), Some(0)), Admission::Go);
        assert_eq!(
            admit(&l, 61_000, 1, Some(30), Some(0)),
            Admission::WaitUntil(120_000)
        );
        assert_eq!(
            admit(&l, 61_000, 5, Some(0), Some(9_996)),
            Admission::Exhausted(86_400_000)
        );
        assert_eq!(
            admit(&MailboxLimits::none(), 0, 1, Some(99), Some(99)),
            Admission::Go
        );
        assert_eq!(admit(&l, 0, 1, None, None), Admission::Go);
    }

    #[test]
    fn replies() {
        let exchange = reply(
            432,
            "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded [Hostname=X]",
        );
        assert_eq!(classify(&exchange), Some(LimitSignal::Concurrency));
        assert_eq!(
            classify(&reply(
                554,
                "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException"
            )),
            Some(LimitSignal::QuotaExceeded)
        );
        assert_eq!(
            classify(&reply(
                550,
                "5.4.5 Daily user sending limit exceeded. For more information"
            )),
            Some(LimitSignal::QuotaExceeded)
        );
        assert_eq!(classify(&reply(550, "5.1.1 User unknown")), None);
        assert_eq!(classify(&reply(451, "4.3.0 Temporary failure")), None);
        assert_eq!(classify(&reply(554, "5.2.0 Message too large")), None);
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        for attempt in 0..40 {
            for random in [0, 1, 777, u64::MAX] {
                let d = backoff(attempt, random);
                let cap = Duration::from_millis(1000 << attempt.min(5));
                assert!(d <= cap && d >= cap / 2, "{attempt} {random} {d:?}");
            }
        }
        assert_ne!(backoff(3, 1), backoff(3, 3000));
    }

    #[test]
    fn slots_lapse() {
        let v = slot_value("host:1:ab", 5000);
        assert!(!slot_is_free(Some(&v), 4999));
        assert!(slot_is_free(Some(&v), 5000));
        assert!(slot_is_free(None, 0));
        assert!(slot_is_free(Some(b"garbage"), 0));
    }

    #[test]
    fn presets() {
        assert_eq!(
            MailboxLimits::preset("M365"),
            Some(MailboxLimits::microsoft365())
        );
        assert!(MailboxLimits::preset("off").unwrap().is_off());
        assert_eq!(MailboxLimits::preset("gmail").unwrap().connections, None);
        assert_eq!(MailboxLimits::preset("yahoo"), None);
    }
}
