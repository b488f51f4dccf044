//! Local passwords: stored as Argon2id hashes (PHC strings), never as the
//! upstream secret; a success is remembered in memory so a client that
//! opens a session per message pays the slow hash once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sha2::{Digest, Sha256};

/// Hashes `password` with Argon2id (the crate's defaults: 19 MiB, two
/// passes) and a random salt, as a PHC string to put in the configuration.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness for the salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks that `hash` is a PHC string this proxy can verify.
pub fn check_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|e| format!("not a password hash: {e}"))?;
    match parsed.algorithm.as_str() {
        "argon2id" | "argon2i" | "argon2d" => Ok(()),
        other => Err(format!(
            "{other} hashes are not supported; use `postern proxy hash-password`"
        )),
    }
}

/// `true` when `password` matches `hash` (slow: an Argon2 derivation).
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Recent successful logins, keyed by a salted digest of user and password
/// (the password is never kept). Bounded and expiring.
pub(crate) struct AuthCache {
    key: [u8; 32],
    entries: Mutex<HashMap<[u8; 32], Instant>>,
    ttl: Duration,
    max: usize,
}

impl AuthCache {
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        let mut key = [0u8; 32];
        // Without randomness the digests are still unguessable without the
        // password; the per-process key only stops precomputation.
        let _ = getrandom::fill(&mut key);
        AuthCache {
            key,
            entries: Mutex::new(HashMap::new()),
            ttl,
            max: max.max(1),
        }
    }

    fn digest(&self, user: &str, password: &str, hash: &str) -> [u8; 32] {
        let mut d = Sha256::new();
        d.update(self.key);
        for part in [user, password, hash] {
            d.update((part.len() as u64).to_le_bytes());
            d.update(part.as_bytes());
        }
        d.finalize().into()
    }

    /// `true` when this user logged in with this password (against this
    /// hash) within the TTL.
    pub(crate) fn contains(&self, now: Instant, user: &str, password: &str, hash: &str) -> bool {
        let k = self.digest(user, password, hash);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&k)
            .is_some_and(|at| now.saturating_duration_since(*at) < self.ttl)
    }

    pub(crate) fn insert(&self, now: Instant, user: &str, password: &str, hash: &str) {
        let k = self.digest(user, password, hash);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.max {
            let ttl = self.ttl;
            entries.retain(|_, at| now.saturating_duration_since(*at) < ttl);
            if entries.len() >= self.max
                && let Some(oldest) = entries.iter().min_by_key(|(_, at)| **at).map(|(k, _)| *k)
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(k, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verify_and_cache() {
        let hash = hash_password("local secret").expect("hashes");
        assert!(hash.starts_with("$argon2id$"));
        check_hash(&hash).expect("valid");
        assert!(check_hash("plaintext").is_err());
        assert!(verify_password(&hash, "local secret"));
        assert!(!verify_password(&hash, "local secreT"));
        assert!(!verify_password("garbage", "local secret"));
        let cache = AuthCache::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        assert!(!cache.contains(t0, "u", "p", &hash));
        cache.insert(t0, "u", "p", &hash);
        assert!(cache.contains(t0, "u", "p", &hash));
        assert!(!cache.contains(t0, "u", "q", &hash), "another password");
        assert!(!cache.contains(t0, "v", "p", &hash), "another user");
        assert!(
            !cache.contains(t0, "u", "p", "$argon2id$other"),
            "a changed hash"
        );
        assert!(
            !cache.contains(t0 + Duration::from_secs(61), "u", "p", &hash),
            "expired"
        );
        cache.insert(t0, "a", "1", &hash);
        cache.insert(t0 + Duration::from_secs(1), "b", "2", &hash);
        assert_eq!(
            cache.entries.lock().map(|e| e.len()).unwrap_or(0),
            2,
            "bounded"
        );
    }
}
