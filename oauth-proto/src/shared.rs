//! One token cache shared by many processes and machines: the record kept in
//! a shared store (a file, Redis), and the pure judgments on it.
//!
//! Each process keeps its own [`crate::TokenCache`] in front (the fast path).
//! When that cache wants a token, the process holding its fetch ticket asks
//! [`plan`] what to do with the shared record:
//!
//! - **adopt** a token another process fetched;
//! - **fetch** one itself, after taking the record's *lease* (a holder name
//!   and an expiry) by compare-and-swap, so one process redeems the refresh
//!   token while the others wait or keep serving a still-valid token;
//! - **wait** for the lease holder, or for a shared `Retry-After`.
//!
//! After the fetch, [`settle`] computes the next record: the token, the
//! rotated refresh token (only when the store still holds the one that was
//! redeemed), the lease released, a `429`'s `Retry-After` for everyone. A
//! holder that dies leaves a lease that expires, and the next caller takes
//! over.
//!
//! Records are JSON of at most [`MAX_RECORD`] bytes, optionally sealed with
//! XChaCha20-Poly1305 under a [`StoreKey`], the record's key name as
//! associated data, so a sealed record cannot be moved to another account's
//! key.

use std::time::Duration;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cache::CacheConfig;
use crate::response::TokenResponse;
use postern_common::Secret;

/// The largest record accepted from a store, in bytes.
pub const MAX_RECORD: usize = 64 * 1024;

/// How many fingerprints of refresh tokens the record remembers, to tell a
/// configured token it already replaced from a new authorization.
pub const KNOWN_REFRESH_TOKENS: usize = 16;

/// The first bytes of a sealed record.
const SEALED_MAGIC: &[u8] = b"postern-sealed-v1:";

/// An access token as the shared record holds it (Unix milliseconds).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedToken {
    /// The token.
    pub token: Secret,
    /// When it expires (counted from the request's send time).
    pub expires_at_ms: u64,
    /// When a refresh starts.
    pub refresh_at_ms: u64,
}

impl SharedToken {
    /// The token a response gives, for a request sent at `sent_at_ms`, with
    /// the cache's rules (default lifetime, refresh ahead, `refresh_in`).
    #[must_use]
    pub fn from_response(response: &TokenResponse, sent_at_ms: u64, config: &CacheConfig) -> Self {
        let lifetime = response.expires_in.unwrap_or(config.default_lifetime);
        let ahead = config.refresh_ahead.min(lifetime / 2);
        let expires_at_ms = sent_at_ms.saturating_add(ms(lifetime));
        let refresh_at_ms = match response.refresh_in {
            Some(r) if r < lifetime => sent_at_ms.saturating_add(ms(r)),
            _ => expires_at_ms.saturating_sub(ms(ahead)),
        };
        SharedToken {
            token: response.access_token.clone(),
            expires_at_ms,
            refresh_at_ms,
        }
    }

    /// The token as a response received `now_ms`, for
    /// [`crate::TokenCache::handle_token`]: its remaining lifetime and
    /// refresh point carried over.
    #[must_use]
    pub fn to_response(&self, now_ms: u64) -> TokenResponse {
        let mut r = TokenResponse::bearer(
            self.token.clone(),
            Some(Duration::from_millis(
                self.expires_at_ms.saturating_sub(now_ms),
            )),
        );
        r.refresh_in = Some(Duration::from_millis(
            self.refresh_at_ms.saturating_sub(now_ms),
        ));
        r
    }

    /// Usable at `now_ms`: not within `margin` of expiry (the margin is at
    /// most the refresh-ahead span, as in the local cache, so a short-lived
    /// token is still used for its first part).
    fn usable(&self, now_ms: u64, margin: Duration) -> bool {
        let margin = ms(margin).min(self.expires_at_ms.saturating_sub(self.refresh_at_ms));
        now_ms.saturating_add(margin) < self.expires_at_ms
    }
}

/// Who may fetch, until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Lease {
    /// The holder's name (host, process, random).
    pub holder: String,
    /// When the lease lapses (Unix milliseconds).
    pub until_ms: u64,
}

/// The record of one credential set in a shared store.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SharedRecord {
    /// Bumped on every write.
    pub version: u64,
    /// The current access token.
    pub token: Option<SharedToken>,
    /// The refresh token to redeem next.
    pub refresh_token: Option<Secret>,
    /// Fingerprints of the refresh tokens this record has held, newest last
    /// (at most [`KNOWN_REFRESH_TOKENS`]).
    pub known: Vec<String>,
    /// The fetch lease.
    pub lease: Option<Lease>,
    /// No token request before this (a `429`'s `Retry-After`), for every
    /// process.
    pub retry_at_ms: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    v: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ref_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rt: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    known: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease: Option<Lease>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry: Option<u64>,
}

/// A record that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// Longer than [`MAX_RECORD`].
    TooLong(usize),
    /// Not a record (bad JSON, a field of the wrong type).
    Malformed(String),
    /// Sealed, and no key was given.
    Sealed,
    /// Not sealed, but a key was given: refused, since anyone with write
    /// access to the store could plant it.
    NotSealed,
    /// Sealed under another key, for another record, or altered.
    Unopenable,
    /// A store key that is not 32 bytes of base64.
    BadKey,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::TooLong(n) => {
                write!(
                    f,
                    "the stored token record is {n} bytes (at most {MAX_RECORD})"
                )
            }
            RecordError::Malformed(e) => write!(f, "the stored token record is malformed: {e}"),
            RecordError::Sealed => f.write_str(
                "the stored token record is encrypted and no store key is set (POSTERN_STORE_KEY)",
            ),
            RecordError::NotSealed => f.write_str(
                "the stored token record is not encrypted but a store key is set: refused",
            ),
            RecordError::Unopenable => f.write_str(
                "the stored token record cannot be decrypted with this store key (another key, or altered)",
            ),
            RecordError::BadKey => {
                f.write_str("the store key must be 32 bytes in base64 (openssl rand -base64 32)")
            }
        }
    }
}

impl std::error::Error for RecordError {}

impl SharedRecord {
    /// The record as bytes (JSON).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let wire = Wire {
            v: self.version,
            at: self.token.as_ref().map(|t| t.token.expose().to_owned()),
            exp: self.token.as_ref().map(|t| t.expires_at_ms),
            ref_at: self.token.as_ref().map(|t| t.refresh_at_ms),
            rt: self.refresh_token.as_ref().map(|t| t.expose().to_owned()),
            known: self.known.clone(),
            lease: self.lease.clone(),
            retry: self.retry_at_ms,
        };
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// Reads a record.
    ///
    /// # Errors
    /// [`RecordError::TooLong`] or [`RecordError::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD {
            return Err(RecordError::TooLong(bytes.len()));
        }
        // The error names where, never what: the record holds tokens.
        let w: Wire = serde_json::from_slice(bytes).map_err(|e| {
            RecordError::Malformed(format!(
                "{:?} error at line {}, column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        let token = match (w.at, w.exp, w.ref_at) {
            (Some(at), Some(exp), Some(ref_at)) => Some(SharedToken {
                token: Secret::new(at),
                expires_at_ms: exp,
                refresh_at_ms: ref_at,
            }),
            (None, _, _) => None,
            _ => return Err(RecordError::Malformed("a token without its times".into())),
        };
        if w.known.len() > KNOWN_REFRESH_TOKENS {
            return Err(RecordError::Malformed("too many fingerprints".into()));
        }
        Ok(SharedRecord {
            version: w.v,
            token,
            refresh_token: w.rt.map(Secret::new),
            known: w.known,
            lease: w.lease,
            retry_at_ms: w.retry,
        })
    }

    /// Encodes, sealed under `key` when there is one. `nonce` must be fresh
    /// random bytes for every call.
    #[must_use]
    pub fn to_bytes(&self, key: Option<&StoreKey>, name: &str, nonce: [u8; 24]) -> Vec<u8> {
        let plain = self.encode();
        match key {
            Some(k) => k.seal(name, &plain, nonce),
            None => plain,
        }
    }

    /// Decodes bytes from the store, opening them with `key`.
    ///
    /// # Errors
    /// A [`RecordError`]: sealed without a key, plain with a key, altered,
    /// too long or malformed.
    pub fn from_bytes(
        bytes: &[u8],
        key: Option<&StoreKey>,
        name: &str,
    ) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD {
            return Err(RecordError::TooLong(bytes.len()));
        }
        let sealed = bytes.starts_with(SEALED_MAGIC);
        match (key, sealed) {
            (Some(k), true) => SharedRecord::decode(&k.open(name, bytes)?),
            (Some(_), false) => Err(RecordError::NotSealed),
            (None, true) => Err(RecordError::Sealed),
            (None, false) => SharedRecord::decode(bytes),
        }
    }
}

/// The fingerprint of a refresh token kept in [`SharedRecord::known`]: the
/// first 16 hex digits of its SHA-256 (not the token).
#[must_use]
pub fn fingerprint(token: &Secret) -> String {
    let digest = Sha256::digest(token.expose().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The key that seals records at rest (XChaCha20-Poly1305).
#[derive(Clone)]
pub struct StoreKey([u8; 32]);

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey([redacted])")
    }
}

impl StoreKey {
    /// A key from 32 raw bytes.
    #[must_use]
    pub fn new(bytes: [u8; 32]) -> Self {
        StoreKey(bytes)
    }

    /// A key from base64 (standard or URL-safe, padded or not) of 32 bytes.
    ///
    /// # Errors
    /// [`RecordError::BadKey`].
    pub fn from_base64(text: &str) -> Result<Self, RecordError> {
        let t = text.trim().trim_end_matches('=');
        let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(t)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
            .map_err(|_| RecordError::BadKey)?;
        let bytes: [u8; 32] = decoded.try_into().map_err(|_| RecordError::BadKey)?;
        Ok(StoreKey(bytes))
    }

    fn seal(&self, name: &str, plain: &[u8], nonce: [u8; 24]) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: name.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(SEALED_MAGIC.len() + 24 + sealed.len());
        out.extend_from_slice(SEALED_MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    fn open(&self, name: &str, bytes: &[u8]) -> Result<Vec<u8>, RecordError> {
        let rest = &bytes[SEALED_MAGIC.len()..];
        if rest.len() < 24 + 16 {
            return Err(RecordError::Unopenable);
        }
        let (nonce, sealed) = rest.split_at(24);
        XChaCha20Poly1305::new((&self.0).into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| RecordError::Unopenable)
    }
}

/// Settings of the shared judgments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedConfig {
    /// How long a fetch lease lasts; a holder that dies is replaced after
    /// it. Default 60 s: keep it above the token request's timeout (30 s by
    /// default), so a live holder always finishes within its lease.
    pub lease: Duration,
    /// A token is not used when it expires within this margin (the cache's
    /// `expiry_margin`).
    pub margin: Duration,
    /// How often a waiting process looks at the record again; default 100 ms.
    pub poll: Duration,
}

impl Default for SharedConfig {
    fn default() -> Self {
        SharedConfig {
            lease: Duration::from_secs(60),
            margin: Duration::from_secs(10),
            poll: Duration::from_millis(100),
        }
    }
}

postern_common::setters!(SharedConfig {
    lease: Duration,
    margin: Duration,
    poll: Duration
});

/// What the holder of a local fetch ticket does with the shared record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Use this token, which another process fetched and which is not yet
    /// due for refresh. Nothing to write.
    Adopt(SharedToken),
    /// Write `take` in place of the record read (compare-and-swap): it holds
    /// the lease for this process. When the swap succeeds, fetch a token,
    /// redeeming `redeem` for a refresh grant, then [`settle`]. When it
    /// fails, read again and ask again.
    Fetch {
        /// The record with this process's lease.
        take: SharedRecord,
        /// The refresh token to redeem (the store's, or the configured one
        /// for a new authorization).
        redeem: Option<Secret>,
        /// A token still usable meanwhile (a refresh ahead of expiry).
        still_valid: Option<SharedToken>,
    },
    /// Another process holds the lease, or the token endpoint asked
    /// everyone to wait: look again at `until_ms` (or sooner, every
    /// [`SharedConfig::poll`]), serving `still_valid` meanwhile.
    Wait {
        /// When to look again at the latest.
        until_ms: u64,
        /// A token still usable meanwhile.
        still_valid: Option<SharedToken>,
    },
}

/// What to do with `record` (`None`: nothing stored yet), at `now_ms`, for
/// the process named `me`. `configured` is the latest refresh token this
/// process knows: it is used only when the record holds none (a new record,
/// one lost with its store, or one whose token the server refused) and it is
/// not a token the record held before, so an old copy of a rotated token is
/// never redeemed again. The record's own token always wins.
#[must_use]
pub fn plan(
    record: Option<&SharedRecord>,
    now_ms: u64,
    me: &str,
    configured: Option<&Secret>,
    config: &SharedConfig,
) -> Plan {
    let empty = SharedRecord::default();
    let r = record.unwrap_or(&empty);
    let usable = r
        .token
        .as_ref()
        .filter(|t| t.usable(now_ms, config.margin))
        .cloned();
    if let Some(t) = &usable
        && now_ms < t.refresh_at_ms
    {
        return Plan::Adopt(t.clone());
    }
    let lease_live = r
        .lease
        .as_ref()
        .filter(|l| l.until_ms > now_ms && l.holder != me);
    if let Some(l) = lease_live {
        return Plan::Wait {
            until_ms: l.until_ms,
            still_valid: usable,
        };
    }
    if let Some(at) = r.retry_at_ms.filter(|&at| at > now_ms) {
        return Plan::Wait {
            until_ms: at,
            still_valid: usable,
        };
    }
    let mut take = r.clone();
    take.version = r.version.wrapping_add(1);
    take.lease = Some(Lease {
        holder: me.to_owned(),
        until_ms: now_ms.saturating_add(ms(config.lease)),
    });
    take.retry_at_ms = None;
    if r.refresh_token.is_none()
        && let Some(c) = configured
    {
        let print = fingerprint(c);
        if !r.known.contains(&print) {
            // The record holds none (a new record, a lost one, or its token
            // was refused) and this one was never in it: a new
            // authorization, or the first process. A token the record held
            // before is never brought back.
            take.refresh_token = Some(c.clone());
            remember(&mut take.known, print);
        }
    }
    Plan::Fetch {
        redeem: take.refresh_token.clone(),
        take,
        still_valid: usable,
    }
}

/// How a fetch ended, for [`settle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A token came back; `rotated` is a new refresh token, if one came.
    Token {
        /// The token.
        token: SharedToken,
        /// A new refresh token.
        rotated: Option<Secret>,
    },
    /// The request failed; `retry_at_ms` when the endpoint said when to
    /// come back (a `429` or `503` with `Retry-After`).
    Failed {
        /// No request before this, for any process.
        retry_at_ms: Option<u64>,
        /// The server refused the refresh token itself
        /// ([`crate::FetchError::retires_refresh_token`]): the record drops
        /// it, so a new authorization can take its place.
        retired: bool,
    },
}

/// The result of [`settle`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settled {
    /// The record to write in place of the one read (compare-and-swap; on a
    /// lost swap, read again and settle again).
    pub next: SharedRecord,
    /// The store's refresh token had changed since this process redeemed
    /// its own: another process redeemed too (its lease had lapsed). The
    /// store keeps the other one; the rotated token is still the caller's
    /// to persist.
    pub raced: bool,
}

/// The record after this process's fetch: `current` is the record as read
/// now, `redeemed` the refresh token the request used.
#[must_use]
pub fn settle(
    current: Option<&SharedRecord>,
    me: &str,
    redeemed: Option<&Secret>,
    outcome: Outcome,
) -> Settled {
    let mut next = current.cloned().unwrap_or_default();
    next.version = next.version.wrapping_add(1);
    if next.lease.as_ref().is_some_and(|l| l.holder == me) {
        next.lease = None;
    }
    let mut raced = false;
    match outcome {
        Outcome::Token { token, rotated } => {
            if next
                .token
                .as_ref()
                .is_none_or(|t| t.expires_at_ms <= token.expires_at_ms)
            {
                next.token = Some(token);
            }
            if let Some(rt) = rotated {
                if next.refresh_token.is_none() || next.refresh_token.as_ref() == redeemed {
                    remember(&mut next.known, fingerprint(&rt));
                    next.refresh_token = Some(rt);
                } else if next.refresh_token.as_ref() != Some(&rt) {
                    raced = true;
                }
            }
            next.retry_at_ms = None;
        }
        Outcome::Failed {
            retry_at_ms,
            retired,
        } => {
            if let Some(at) = retry_at_ms {
                next.retry_at_ms = Some(next.retry_at_ms.map_or(at, |r| r.max(at)));
            }
            if retired && redeemed.is_some() && next.refresh_token.as_ref() == redeemed {
                next.refresh_token = None;
            }
        }
    }
    Settled { next, raced }
}

fn remember(known: &mut Vec<String>, print: String) {
    if !known.contains(&print) {
        known.push(print);
    }
    let excess = known.len().saturating_sub(KNOWN_REFRESH_TOKENS);
    known.drain(..excess);
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    fn cfg() -> SharedConfig {
        SharedConfig::default()
            .lease(Duration::from_secs(5))
            .margin(Duration::from_millis(500))
    }

    fn token(exp: u64, refresh: u64) -> SharedToken {
        SharedToken {
            token: Secret::new("at"),
            expires_at_ms: exp,
            refresh_at_ms: refresh,
        }
    }

    #[test]
    fn first_process_seeds_and_takes_the_lease() {
        let rt0 = Secret::new("rt0");
        let Plan::Fetch { take, redeem, .. } = plan(None, 1000, "a", Some(&rt0), &cfg()) else {
            panic!()
        };
        assert_eq!(redeem, Some(rt0.clone()));
        assert_eq!(take.lease.as_ref().unwrap().holder, "a");
        assert_eq!(take.lease.as_ref().unwrap().until_ms, 6000);
        // B sees A's lease and waits.
        assert_eq!(
            plan(Some(&take), 1500, "b", Some(&rt0), &cfg()),
            Plan::Wait {
                until_ms: 6000,
                still_valid: None
            }
        );
        // A gets a token and a rotated refresh token.
        let s = settle(
            Some(&take),
            "a",
            Some(&rt0),
            Outcome::Token {
                token: token(5000, 3000),
                rotated: Some(Secret::new("rt1")),
            },
        );
        assert!(!s.raced);
        assert_eq!(s.next.lease, None);
        assert_eq!(s.next.refresh_token, Some(Secret::new("rt1")));
        // B adopts it; B's configured rt0 is known, so it is not redeemed again.
        assert_eq!(
            plan(Some(&s.next), 2000, "b", Some(&rt0), &cfg()),
            Plan::Adopt(token(5000, 3000))
        );
        // At refresh time B takes the lease and redeems rt1, not rt0.
        let Plan::Fetch {
            redeem,
            still_valid,
            ..
        } = plan(Some(&s.next), 3000, "b", Some(&rt0), &cfg())
        else {
            panic!()
        };
        assert_eq!(redeem, Some(Secret::new("rt1")));
        assert_eq!(still_valid, Some(token(5000, 3000)));
    }

    #[test]
    fn a_new_authorization_replaces_a_refused_token_only() {
        let old = Secret::new("old");
        let new = Secret::new("new");
        let mut r = SharedRecord::default();
        r.refresh_token = Some(old.clone());
        r.known = vec![fingerprint(&old)];
        // The store's token wins while it works.
        let Plan::Fetch { redeem, take, .. } = plan(Some(&r), 0, "a", Some(&new), &cfg()) else {
            panic!()
        };
        assert_eq!(redeem, Some(old.clone()));
        // Refused by the server: dropped, and the new one takes its place.
        let s = settle(
            Some(&take),
            "a",
            Some(&old),
            Outcome::Failed {
                retry_at_ms: None,
                retired: true,
            },
        );
        assert_eq!(s.next.refresh_token, None);
        let Plan::Fetch { redeem, take, .. } = plan(Some(&s.next), 1, "b", Some(&new), &cfg())
        else {
            panic!()
        };
        assert_eq!(redeem, Some(new.clone()));
        assert!(take.known.contains(&fingerprint(&new)));
        // A stale copy of the refused one is never brought back.
        let Plan::Fetch { redeem, .. } = plan(Some(&s.next), 1, "c", Some(&old), &cfg()) else {
            panic!()
        };
        assert_eq!(redeem, None);
    }

    #[test]
    fn a_dead_holder_is_replaced_after_the_lease() {
        let Plan::Fetch { take, .. } = plan(None, 0, "a", None, &cfg()) else {
            panic!()
        };
        assert!(matches!(
            plan(Some(&take), 4999, "b", None, &cfg()),
            Plan::Wait { .. }
        ));
        let Plan::Fetch { take: b, .. } = plan(Some(&take), 5000, "b", None, &cfg()) else {
            panic!()
        };
        assert_eq!(b.lease.unwrap().holder, "b");
    }

    #[test]
    fn retry_after_holds_everyone() {
        let Plan::Fetch { take, .. } = plan(None, 0, "a", None, &cfg()) else {
            panic!()
        };
        let s = settle(
            Some(&take),
            "a",
            None,
            Outcome::Failed {
                retry_at_ms: Some(60_000),
                retired: false,
            },
        );
        assert_eq!(
            plan(Some(&s.next), 100, "b", None, &cfg()),
            Plan::Wait {
                until_ms: 60_000,
                still_valid: None
            }
        );
        assert!(matches!(
            plan(Some(&s.next), 60_000, "b", None, &cfg()),
            Plan::Fetch { .. }
        ));
    }

    #[test]
    fn a_late_holder_does_not_overwrite_a_newer_refresh_token() {
        let mut r = SharedRecord::default();
        r.refresh_token = Some(Secret::new("rt2"));
        let s = settle(
            Some(&r),
            "slow",
            Some(&Secret::new("rt1")),
            Outcome::Token {
                token: token(10, 5),
                rotated: Some(Secret::new("rt2b")),
            },
        );
        assert!(s.raced);
        assert_eq!(s.next.refresh_token, Some(Secret::new("rt2")));
    }

    #[test]
    fn records_round_trip_sealed_and_plain() {
        let mut r = SharedRecord::default();
        r.version = 7;
        r.token = Some(token(10, 5));
        r.refresh_token = Some(Secret::new("refresh-secret"));
        r.lease = Some(Lease {
            holder: "h".into(),
            until_ms: 3,
        });
        let plain = r.to_bytes(None, "k", [0; 24]);
        assert_eq!(SharedRecord::from_bytes(&plain, None, "k").unwrap(), r);
        let key = StoreKey::new([7; 32]);
        let sealed = r.to_bytes(Some(&key), "k", [1; 24]);
        assert!(!sealed.windows(14).any(|w| w == b"refresh-secret"));
        assert_eq!(
            SharedRecord::from_bytes(&sealed, Some(&key), "k").unwrap(),
            r
        );
        assert_eq!(
            SharedRecord::from_bytes(&sealed, Some(&key), "other"),
            Err(RecordError::Unopenable)
        );
        assert_eq!(
            SharedRecord::from_bytes(&sealed, Some(&StoreKey::new([8; 32])), "k"),
            Err(RecordError::Unopenable)
        );
        assert_eq!(
            SharedRecord::from_bytes(&sealed, None, "k"),
            Err(RecordError::Sealed)
        );
        assert_eq!(
            SharedRecord::from_bytes(&plain, Some(&key), "k"),
            Err(RecordError::NotSealed)
        );
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            SharedRecord::from_bytes(&flipped, Some(&key), "k"),
            Err(RecordError::Unopenable)
        );
        assert!(matches!(
            SharedRecord::from_bytes(b"{\"v\":", None, "k"),
            Err(RecordError::Malformed(_))
        ));
        // A malformed record's error never repeats what it holds.
        let e = SharedRecord::from_bytes(b"{\"v\":\"refresh-secret\"}", None, "k").unwrap_err();
        assert!(!e.to_string().contains("refresh-secret"), "{e}");
        assert!(!format!("{r:?}{key:?}").contains("refresh-secret"));
        assert!(StoreKey::from_base64("AAAA").is_err());
        let b64 = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        assert!(StoreKey::from_base64(&b64).is_ok());
        assert!(StoreKey::from_base64(b64.trim_end_matches('=')).is_ok());
    }

    #[test]
    fn adopted_tokens_keep_their_times() {
        let t = token(10_000, 8_000);
        let r = t.to_response(4_000);
        assert_eq!(r.expires_in, Some(Duration::from_millis(6_000)));
        assert_eq!(r.refresh_in, Some(Duration::from_millis(4_000)));
        let back = SharedToken::from_response(&r, 4_000, &CacheConfig::default());
        assert_eq!(back, t);
    }
}
