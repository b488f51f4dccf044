//! Device authorization polling (RFC 8628 §3.4–3.5) on time given as an
//! argument: poll at the interval, keep it on `authorization_pending`, add
//! 5 seconds on `slow_down`, stop when the codes expire.

use std::time::{Duration, Instant};

use crate::response::DeviceAuthorization;

/// The polling schedule of one device authorization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevicePoll {
    interval: Duration,
    next: Instant,
    expires_at: Instant,
}

impl DevicePoll {
    /// Starts polling for `auth`, received at `now`.
    #[must_use]
    pub fn new(auth: &DeviceAuthorization, now: Instant) -> Self {
        DevicePoll {
            interval: auth.interval,
            next: now + auth.interval,
            expires_at: now + auth.expires_in,
        }
    }

    /// When to send the next token request; `None` once the codes expired.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.next < self.expires_at).then_some(self.next)
    }

    /// The server said `authorization_pending` (or `slow_down` when
    /// `slow_down`) to the request sent at `now`.
    pub fn handle_poll_again(&mut self, now: Instant, slow_down: bool) {
        if slow_down {
            self.interval += Duration::from_secs(5);
        }
        self.next = now + self.interval;
    }

    /// The current interval.
    #[must_use]
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// `true` once the device code expired.
    #[must_use]
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_common::Secret;

    #[test]
    fn interval_rules() {
        let auth = DeviceAuthorization {
            device_code: Secret::new("d"),
            user_code: "U".into(),
            verification_uri: "https://v".into(),
            verification_uri_complete: None,
            expires_in: Duration::from_secs(30),
            interval: Duration::from_secs(5),
            message: None,
        };
        let t0 = Instant::now();
        let mut p = DevicePoll::new(&auth, t0);
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        p.handle_poll_again(t0 + Duration::from_secs(5), false);
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        p.handle_poll_again(t0 + Duration::from_secs(10), true);
        assert_eq!(p.interval(), Duration::from_secs(10));
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(20)));
        p.handle_poll_again(t0 + Duration::from_secs(20), true);
        assert_eq!(p.poll_timeout(), None);
        assert!(p.expired(t0 + Duration::from_secs(30)));
    }
}
