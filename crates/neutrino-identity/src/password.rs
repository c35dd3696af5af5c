//! Password hashing (argon2id, PHC strings) and a process-local cache of verifications.
//!
//! Argon2 is slow by design, and every `openstack` CLI call logs in, so successful
//! verifications are remembered as sha256(user id, stored hash, password): a changed
//! password (new stored hash) misses the cache by construction. Hashing runs on the blocking
//! pool. This module must never log, store or return a clear-text password.

use std::collections::HashSet;
use std::sync::Mutex;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sha2::{Digest, Sha256};

use crate::error::IdentityError;

/// Most remembered verifications before the cache is reset.
const CACHE_MAX: usize = 50_000;

/// Hashes a password into a PHC string (off the async runtime).
pub(crate) async fn hash(password: &str) -> Result<String, IdentityError> {
    let pw = password.to_string();
    tokio::task::spawn_blocking(move || {
        let mut bytes = [0u8; 16];
        rand::fill(&mut bytes);
        let salt =
            SaltString::encode_b64(&bytes).map_err(|e| IdentityError::Hash(e.to_string()))?;
        Argon2::default()
            .hash_password(pw.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| IdentityError::Hash(e.to_string()))
    })
    .await
    .map_err(|e| IdentityError::Hash(e.to_string()))?
}

/// Remembers successful verifications for this process.
#[derive(Default)]
pub(crate) struct VerifyCache {
    ok: Mutex<HashSet<[u8; 32]>>,
}

fn key(user_id: &str, phc: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(user_id.as_bytes());
    h.update([0]);
    h.update(phc.as_bytes());
    h.update([0]);
    h.update(password.as_bytes());
    h.finalize().into()
}

impl VerifyCache {
    /// True when `password` matches the stored PHC string `phc` of `user_id`.
    pub(crate) async fn verify(
        &self,
        user_id: &str,
        phc: &str,
        password: &str,
    ) -> Result<bool, IdentityError> {
        let k = key(user_id, phc, password);
        if self.lock().contains(&k) {
            return Ok(true);
        }
        let (phc_owned, pw) = (phc.to_string(), password.to_string());
        let ok = tokio::task::spawn_blocking(move || match PasswordHash::new(&phc_owned) {
            Ok(parsed) => Argon2::default()
                .verify_password(pw.as_bytes(), &parsed)
                .is_ok(),
            Err(_) => false,
        })
        .await
        .map_err(|e| IdentityError::Hash(e.to_string()))?;
        if ok {
            let mut set = self.lock();
            if set.len() >= CACHE_MAX {
                set.clear();
            }
            set.insert(k);
        }
        Ok(ok)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        // A poisoned lock only means another thread panicked mid-insert; the set is still valid.
        self.ok.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let phc = hash("s3cret").await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        let c = VerifyCache::default();
        assert!(c.verify("u", &phc, "s3cret").await.unwrap());
        // cached path
        assert!(c.verify("u", &phc, "s3cret").await.unwrap());
        assert!(!c.verify("u", &phc, "wrong").await.unwrap());
        // a different user with the same hash is not a cache hit, but still verifies
        assert!(c.verify("v", &phc, "s3cret").await.unwrap());
        assert!(!c.verify("u", "not a phc", "s3cret").await.unwrap());
    }
}
