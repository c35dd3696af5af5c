//! Tokens: issue, resolve, cache, revoke, and render as Keystone does.
//!
//! A token is 32 random bytes, hex-encoded; only its sha256 is stored, with the user, the
//! scope, the methods and the expiry. Roles are resolved from the current assignments when a
//! token is validated (as Keystone does for Fernet tokens), so removing a role takes effect.
//! Validated tokens are cached in memory keyed by hash; an entry is trusted for at most
//! [`RECHECK`] before the database is consulted again, so a revocation made by another server
//! process sharing the database takes effect within seconds, and a revocation made by this
//! process takes effect at once. This module must never store or log a token value.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use neutrino_core::Context;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Identity;
use crate::error::IdentityError;
use crate::store::{self, Target, TokenRow};

/// How long a cached validation is trusted before the database is asked again.
pub(crate) const RECHECK: Duration = Duration::from_secs(5);
/// Most cached tokens; beyond it expired entries are pruned, then the cache is reset.
const CACHE_MAX: usize = 100_000;

/// What a token is scoped to, resolved to names.
#[derive(Debug, Clone)]
pub(crate) enum Scope {
    Unscoped,
    Project {
        id: String,
        name: String,
        domain_id: String,
        domain_name: String,
    },
    Domain {
        id: String,
        name: String,
    },
    System,
}

/// A validated token, everything needed to render it or build a [`Context`].
#[derive(Debug, Clone)]
pub(crate) struct TokenInfo {
    pub(crate) user_id: String,
    pub(crate) user_name: String,
    pub(crate) user_domain_id: String,
    pub(crate) user_domain_name: String,
    pub(crate) scope: Scope,
    /// Effective roles (implied ones included): (id, name).
    pub(crate) roles: Vec<(String, String)>,
    pub(crate) methods: Vec<String>,
    pub(crate) audit_ids: Vec<String>,
    pub(crate) issued_at: i64,
    pub(crate) expires_at: i64,
    /// Non-secret id for logs: the first 8 hex digits of sha256(token).
    pub(crate) token_id: String,
}

impl TokenInfo {
    /// The domain the caller acts in: the project's domain, the scoped domain, or the user's.
    pub(crate) fn acting_domain(&self) -> &str {
        match &self.scope {
            Scope::Project { domain_id, .. } => domain_id,
            Scope::Domain { id, .. } => id,
            _ => &self.user_domain_id,
        }
    }

    pub(crate) fn is_admin(&self) -> bool {
        self.roles
            .iter()
            .any(|(_, n)| n.eq_ignore_ascii_case("admin"))
    }

    pub(crate) fn has_role(&self, name: &str) -> bool {
        self.roles.iter().any(|(_, n)| n.eq_ignore_ascii_case(name))
    }

    pub(crate) fn context(&self) -> Context {
        let mut roles: Vec<String> = self.roles.iter().map(|(_, n)| n.to_lowercase()).collect();
        roles.sort();
        roles.dedup();
        let (project_id, project_name, domain_id) = match &self.scope {
            Scope::Project { id, name, .. } => (Some(id.clone()), Some(name.clone()), None),
            Scope::Domain { id, .. } => (None, None, Some(id.clone())),
            _ => (None, None, None),
        };
        Context {
            user_id: self.user_id.clone(),
            user_name: self.user_name.clone(),
            project_id,
            project_name,
            domain_id,
            roles,
            system_scope: matches!(self.scope, Scope::System),
            token_id: self.token_id.clone(),
            request_id: String::new(),
        }
    }

    /// The `{"token": {...}}` document.
    pub(crate) fn render(&self, catalog: Option<&Value>) -> Value {
        let mut t = json!({
            "methods": self.methods,
            "user": {
                "id": self.user_id,
                "name": self.user_name,
                "domain": {"id": self.user_domain_id, "name": self.user_domain_name},
                "password_expires_at": null,
            },
            "audit_ids": self.audit_ids,
            "expires_at": format_time(self.expires_at),
            "issued_at": format_time(self.issued_at),
        });
        let scoped = !matches!(self.scope, Scope::Unscoped);
        match &self.scope {
            Scope::Unscoped => {}
            Scope::Project {
                id,
                name,
                domain_id,
                domain_name,
            } => {
                t["project"] = json!({"id": id, "name": name,
                    "domain": {"id": domain_id, "name": domain_name}});
                t["is_domain"] = json!(false);
            }
            Scope::Domain { id, name } => t["domain"] = json!({"id": id, "name": name}),
            Scope::System => t["system"] = json!({"all": true}),
        }
        if scoped {
            t["roles"] = self
                .roles
                .iter()
                .map(|(id, name)| json!({"id": id, "name": name}))
                .collect();
            if let Some(c) = catalog {
                t["catalog"] = c.clone();
            }
        }
        json!({ "token": t })
    }
}

/// sha256 of a token, raw.
pub(crate) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(H[usize::from(b >> 4)]));
        s.push(char::from(H[usize::from(b & 15)]));
    }
    s
}

/// A fresh token value.
fn new_token() -> String {
    let mut b = [0u8; 32];
    rand::fill(&mut b);
    hex(&b)
}

/// A fresh audit id (22 characters, like Keystone's url-safe base64 of 16 bytes).
fn new_audit_id() -> String {
    let mut b = [0u8; 11];
    rand::fill(&mut b);
    hex(&b)
}

/// Now, in unix microseconds.
pub(crate) fn now_micros() -> i64 {
    let ns = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
    i64::try_from(ns).unwrap_or(i64::MAX)
}

/// Keystone's time format: `2026-11-21T13:50:09.000000Z` (Tempest requires the `Z`).
pub(crate) fn format_time(micros: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.ffffff](Z|+00:00)` into unix microseconds.
pub(crate) fn parse_time(s: &str) -> Option<i64> {
    let s = s
        .strip_suffix('Z')
        .or_else(|| s.strip_suffix("+00:00"))
        .unwrap_or(s);
    let (main, frac) = match s.split_once('.') {
        Some((m, f)) => (m, f),
        None => (s, ""),
    };
    let (date, clock) = main.split_once('T')?;
    let mut d = date.split('-').map(str::parse::<i32>);
    let (y, mo, da) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut c = clock.split(':').map(str::parse::<u8>);
    let (h, mi, se) = (c.next()?.ok()?, c.next()?.ok()?, c.next()?.ok()?);
    let month = time::Month::try_from(u8::try_from(mo).ok()?).ok()?;
    let date = time::Date::from_calendar_date(y, month, u8::try_from(da).ok()?).ok()?;
    let tod = time::Time::from_hms(h, mi, se).ok()?;
    let secs = time::PrimitiveDateTime::new(date, tod)
        .assume_utc()
        .unix_timestamp();
    let mut micros: i64 = 0;
    let mut scale = 100_000;
    for ch in frac.chars().take(6) {
        micros += i64::from(ch.to_digit(10)?) * scale;
        scale /= 10;
    }
    Some(secs * 1_000_000 + micros)
}

/// Keystone's default implied roles: admin ⇒ member ⇒ reader.
pub(crate) fn implied(name: &str) -> &'static [&'static str] {
    match name.to_ascii_lowercase().as_str() {
        "admin" => &["member", "reader"],
        "member" => &["reader"],
        _ => &[],
    }
}

struct Cached {
    info: Arc<TokenInfo>,
    ctx: Context,
    checked: Instant,
}

/// Validated tokens of this process, by sha256.
#[derive(Default)]
pub(crate) struct TokenCache {
    map: RwLock<HashMap<[u8; 32], Cached>>,
}

impl TokenCache {
    fn get(&self, key: &[u8; 32], now: i64) -> Option<(Arc<TokenInfo>, Context)> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let c = map.get(key)?;
        (c.checked.elapsed() < RECHECK && now < c.info.expires_at)
            .then(|| (c.info.clone(), c.ctx.clone()))
    }

    fn put(&self, key: [u8; 32], info: Arc<TokenInfo>) -> Context {
        let ctx = info.context();
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CACHE_MAX {
            let now = now_micros();
            map.retain(|_, c| c.info.expires_at > now && c.checked.elapsed() < RECHECK);
            if map.len() >= CACHE_MAX {
                map.clear();
            }
        }
        map.insert(
            key,
            Cached {
                info,
                ctx: ctx.clone(),
                checked: Instant::now(),
            },
        );
        ctx
    }

    pub(crate) fn remove(&self, key: &[u8; 32]) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Forgets everything (after changes to users, projects, roles or assignments).
    pub(crate) fn clear(&self) {
        self.map.write().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Identity {
    /// Resolves a token row into names and effective roles; fails (401) when the user,
    /// its domain, or the scope target is gone or disabled, or no role remains on the scope.
    pub(crate) async fn resolve(
        &self,
        row: &TokenRow,
        token_id: String,
    ) -> Result<TokenInfo, IdentityError> {
        let db = self.db().reader();
        let user = store::get_user(db, &row.user_id)
            .await?
            .filter(|u| u.enabled)
            .ok_or_else(|| IdentityError::unauthorized("user missing or disabled"))?;
        let udom = store::get_domain(db, &user.domain_id)
            .await?
            .filter(|d| d.enabled)
            .ok_or_else(|| IdentityError::unauthorized("user's domain missing or disabled"))?;
        let scope = match &row.scope {
            None => Scope::Unscoped,
            Some(Target::Project(pid)) => {
                let p = store::get_project(db, pid)
                    .await?
                    .filter(|p| p.enabled)
                    .ok_or_else(|| IdentityError::unauthorized("project missing or disabled"))?;
                let d = store::get_domain(db, &p.domain_id)
                    .await?
                    .filter(|d| d.enabled)
                    .ok_or_else(|| IdentityError::unauthorized("project's domain disabled"))?;
                Scope::Project {
                    id: p.id,
                    name: p.name,
                    domain_id: d.id,
                    domain_name: d.name,
                }
            }
            Some(Target::Domain(did)) => {
                let d = store::get_domain(db, did)
                    .await?
                    .filter(|d| d.enabled)
                    .ok_or_else(|| IdentityError::unauthorized("domain missing or disabled"))?;
                Scope::Domain {
                    id: d.id,
                    name: d.name,
                }
            }
            Some(Target::System) => Scope::System,
        };
        let roles = match &row.scope {
            None => Vec::new(),
            Some(target) => {
                let r = self.effective_roles(&user.id, target).await?;
                if r.is_empty() {
                    return Err(IdentityError::unauthorized(format!(
                        "user {} has no role on {} {}",
                        user.id,
                        target.kind(),
                        target.id()
                    )));
                }
                r
            }
        };
        Ok(TokenInfo {
            user_id: user.id,
            user_name: user.name,
            user_domain_id: udom.id,
            user_domain_name: udom.name,
            scope,
            roles,
            methods: row.methods.clone(),
            audit_ids: row.audit_ids.clone(),
            issued_at: row.issued_at,
            expires_at: row.expires_at,
            token_id,
        })
    }

    /// Direct roles of a user on a target plus the roles they imply: (id, name).
    pub(crate) async fn effective_roles(
        &self,
        user_id: &str,
        target: &Target,
    ) -> Result<Vec<(String, String)>, IdentityError> {
        let db = self.db().reader();
        let direct = store::roles_on(db, user_id, target).await?;
        let mut out: Vec<(String, String)> = direct
            .iter()
            .map(|r| (r.id.clone(), r.name.clone()))
            .collect();
        let wanted: Vec<&str> = direct
            .iter()
            .flat_map(|r| implied(&r.name).iter().copied())
            .filter(|n| !out.iter().any(|(_, have)| have.eq_ignore_ascii_case(n)))
            .collect();
        for name in wanted {
            if out.iter().any(|(_, have)| have.eq_ignore_ascii_case(name)) {
                continue;
            }
            if let Some(r) = store::role_by_name(db, name).await? {
                out.push((r.id, r.name));
            }
        }
        Ok(out)
    }

    /// Looks a token up: cache first, then the database. 401 when unknown, expired, revoked
    /// or no longer valid for its scope.
    pub(crate) async fn lookup(
        &self,
        token: &str,
    ) -> Result<(Arc<TokenInfo>, Context), IdentityError> {
        if token.is_empty() || token.len() > 1024 {
            return Err(IdentityError::unauthorized("malformed token"));
        }
        let key = digest(token);
        let now = now_micros();
        if let Some(hit) = self.tokens().get(&key, now) {
            return Ok(hit);
        }
        let hash = hex(&key);
        let row = store::get_token(self.db().reader(), &hash).await?;
        let Some(row) = row.filter(|r| !r.revoked && r.expires_at > now) else {
            self.tokens().remove(&key);
            return Err(IdentityError::unauthorized(
                "token unknown, revoked or expired",
            ));
        };
        match self.resolve(&row, hash[..8].to_string()).await {
            Ok(info) => {
                let info = Arc::new(info);
                let ctx = self.tokens().put(key, info.clone());
                Ok((info, ctx))
            }
            Err(e) => {
                self.tokens().remove(&key);
                Err(e)
            }
        }
    }

    /// Issues a token for `user_id` on `scope`; returns the token value and its info.
    /// `expires_at` caps the expiry (rescoping keeps the original expiry, as Keystone does).
    pub(crate) async fn issue(
        &self,
        user_id: &str,
        scope: Option<Target>,
        methods: Vec<String>,
        parent_audit: Option<&str>,
        expires_at: Option<i64>,
    ) -> Result<(String, Arc<TokenInfo>), IdentityError> {
        let now = now_micros();
        let default_exp =
            now.saturating_add(self.cfg().token_expiration_secs.saturating_mul(1_000_000));
        let mut audit_ids = vec![new_audit_id()];
        audit_ids.extend(parent_audit.map(str::to_string));
        let row = TokenRow {
            user_id: user_id.to_string(),
            scope,
            methods,
            audit_ids,
            issued_at: now,
            expires_at: expires_at.map_or(default_exp, |e| e.min(default_exp)),
            revoked: false,
        };
        let token = new_token();
        let key = digest(&token);
        let hash = hex(&key);
        let info = Arc::new(self.resolve(&row, hash[..8].to_string()).await?);
        let mut tx = self.db().begin().await?;
        store::insert_token(&mut tx, &hash, &row).await?;
        // Keep the table small: forget records that expired a day ago, now and then.
        if key[0] == 0 {
            store::purge_tokens(&mut tx, now - 86_400 * 1_000_000).await?;
        }
        self.db().commit(tx).await?;
        self.tokens().put(key, info.clone());
        Ok((token, info))
    }

    /// Revokes a token (this process forgets it at once; others within [`RECHECK`]).
    pub(crate) async fn revoke(&self, token: &str) -> Result<(), IdentityError> {
        let key = digest(token);
        let mut tx = self.db().begin().await?;
        store::revoke_token(&mut tx, &hex(&key)).await?;
        self.db().commit(tx).await?;
        self.tokens().remove(&key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_in_keystone_format() {
        let t = 1_795_000_000_123_456;
        let s = format_time(t);
        assert!(s.ends_with('Z'), "{s}");
        assert_eq!(s.len(), "2026-11-21T13:50:09.000000Z".len());
        assert_eq!(parse_time(&s), Some(t));
        assert_eq!(parse_time("1970-01-01T00:00:10Z"), Some(10_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:10.5+00:00"), Some(10_500_000));
        assert_eq!(parse_time("garbage"), None);
        assert_eq!(parse_time("2026-13-01T00:00:00Z"), None);
    }

    #[test]
    fn implied_roles_follow_keystone_defaults() {
        assert_eq!(implied("Admin"), &["member", "reader"]);
        assert_eq!(implied("member"), &["reader"]);
        assert!(implied("reader").is_empty());
    }

    #[test]
    fn hex_encodes() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(new_token().len(), 64);
        assert_eq!(new_audit_id().len(), 22);
    }
}
