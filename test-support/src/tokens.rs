//! The set of valid bearer tokens shared by the loopback token endpoint and
//! the loopback SMTP server.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::lock;

/// Valid access tokens. Clones share the set.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    valid: Mutex<HashSet<String>>,
    issued: AtomicU64,
}

impl Tokens {
    /// Issues a new token and records it as valid.
    #[must_use]
    pub fn issue(&self) -> String {
        let n = self.inner.issued.fetch_add(1, Ordering::Relaxed) + 1;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let token = format!("at-{n}-{nanos:08x}");
        lock(&self.inner.valid).insert(token.clone());
        token
    }

    /// Records `token` as valid (a token issued by someone else).
    pub fn insert(&self, token: &str) {
        lock(&self.inner.valid).insert(token.to_owned());
    }

    /// `true` when `token` was issued and not revoked.
    #[must_use]
    pub fn is_valid(&self, token: &str) -> bool {
        lock(&self.inner.valid).contains(token)
    }

    /// Revokes every token issued so far (the server-side change that makes
    /// a cached token fail).
    pub fn revoke_all(&self) {
        lock(&self.inner.valid).clear();
    }

    /// Tokens issued so far.
    #[must_use]
    pub fn issued(&self) -> u64 {
        self.inner.issued.load(Ordering::Relaxed)
    }
}
