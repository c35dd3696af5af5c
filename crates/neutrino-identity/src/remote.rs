//! Token validation against an external Keystone, as keystonemiddleware's `auth_token` does.
//!
//! Owns the service token (password auth with the `[keystone_authtoken]` service user,
//! project-scoped, renewed a minute before it expires or when Keystone rejects it) and a
//! short cache of validated user tokens: an entry lives at most [`CACHE_TTL`] and never past
//! the token's own expiry, so a revocation in Keystone is honoured within a minute. This
//! module must never log a token or the service password, and never cache a failure.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use neutrino_core::config::KeystoneAuthtoken;
use neutrino_core::{ApiError, Context};
use serde_json::{Value, json};

use crate::error::IdentityError;
use crate::token::{digest, hex, implied, now_micros, parse_time};

/// Longest time a validation result is reused.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// Most cached tokens before expired entries are pruned (then the cache is reset).
const CACHE_MAX: usize = 100_000;
/// Renew the service token this long before it expires (microseconds).
const RENEW_MARGIN_US: i64 = 60_000_000;

/// Validates tokens against an external Keystone; cheap to clone.
#[derive(Clone)]
pub struct RemoteKeystone {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: KeystoneAuthtoken,
    http: reqwest::Client,
    /// `<auth_url>/v3`.
    v3: String,
    /// (service token, expires_at in unix µs).
    service: tokio::sync::Mutex<Option<(String, i64)>>,
    cache: RwLock<HashMap<[u8; 32], (Context, Instant)>>,
}

fn remote(what: impl std::fmt::Display) -> IdentityError {
    IdentityError::Remote(what.to_string())
}

impl RemoteKeystone {
    /// A validator for the Keystone at `cfg.auth_url` (versioned or not).
    pub fn new(cfg: KeystoneAuthtoken) -> Self {
        let base = cfg.auth_url.trim_end_matches('/');
        let v3 = if base.ends_with("/v3") {
            base.to_string()
        } else {
            format!("{base}/v3")
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        RemoteKeystone {
            inner: Arc::new(Inner {
                cfg,
                http,
                v3,
                service: tokio::sync::Mutex::new(None),
                cache: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// Validates `token`: the caller's context, 401 if Keystone does not know it, 503 if
    /// Keystone cannot be asked.
    pub async fn validate(&self, token: &str) -> Result<Context, ApiError> {
        self.check(token)
            .await
            .map_err(IdentityError::into_api_error)
    }

    async fn check(&self, token: &str) -> Result<Context, IdentityError> {
        if token.is_empty() || token.len() > 8192 {
            return Err(IdentityError::unauthorized("malformed token"));
        }
        let key = digest(token);
        if let Some((ctx, until)) = self.cache().get(&key)
            && Instant::now() < *until
        {
            return Ok(ctx.clone());
        }
        let mut renewed = false;
        let resp = loop {
            let service = self.service_token(renewed).await?;
            let resp = self
                .inner
                .http
                .get(format!("{}/auth/tokens?nocatalog", self.inner.v3))
                .header("X-Auth-Token", service)
                .header("X-Subject-Token", token)
                .send()
                .await
                .map_err(|e| remote(format!("validating a token: {e}")))?;
            // Our service token may have been revoked: renew it once.
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED && !renewed {
                renewed = true;
                continue;
            }
            break resp;
        };
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::UNAUTHORIZED {
            self.cache_mut().remove(&key);
            return Err(IdentityError::unauthorized(format!(
                "keystone answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(remote(format!("token validation answered {status}")));
        }
        let body: Value = resp
            .json()
            .await
            .map_err(|e| remote(format!("token validation body: {e}")))?;
        let (ctx, expires) = context_from(&body, &hex(&key)[..8])
            .ok_or_else(|| remote("token validation body lacks token.user.id"))?;
        let now = now_micros();
        if expires.is_some_and(|e| e <= now) {
            return Err(IdentityError::unauthorized("token expired"));
        }
        // Never past expiry; an unparseable expiry gets a short lease.
        let left = expires.map_or(Duration::from_secs(10), |e| {
            Duration::from_micros(u64::try_from(e - now).unwrap_or(0))
        });
        let until = Instant::now() + left.min(CACHE_TTL);
        let mut cache = self.cache_mut();
        if cache.len() >= CACHE_MAX {
            let now = Instant::now();
            cache.retain(|_, (_, u)| *u > now);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, (ctx.clone(), until));
        Ok(ctx)
    }

    /// The service token, fetched when missing, near expiry, or `force`d.
    async fn service_token(&self, force: bool) -> Result<String, IdentityError> {
        let mut slot = self.inner.service.lock().await;
        if let Some((tok, exp)) = slot.as_ref()
            && !force
            && *exp > now_micros() + RENEW_MARGIN_US
        {
            return Ok(tok.clone());
        }
        let c = &self.inner.cfg;
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": c.username,
                "domain": {"name": c.user_domain_name},
                "password": c.password,
            }}},
            "scope": {"project": {"name": c.project_name, "domain": {"name": c.project_domain_name}}},
        }});
        let resp = self
            .inner
            .http
            .post(format!("{}/auth/tokens?nocatalog", self.inner.v3))
            .json(&body)
            .send()
            .await
            .map_err(|e| remote(format!("obtaining the service token: {e}")))?;
        if !resp.status().is_success() {
            return Err(remote(format!(
                "service user {:?} could not authenticate: {}",
                c.username,
                resp.status()
            )));
        }
        let tok = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| remote("service token answer lacks X-Subject-Token"))?;
        let doc: Value = resp
            .json()
            .await
            .map_err(|e| remote(format!("service token body: {e}")))?;
        let exp = doc["token"]["expires_at"]
            .as_str()
            .and_then(parse_time)
            .unwrap_or_else(|| now_micros() + 2 * RENEW_MARGIN_US);
        *slot = Some((tok.clone(), exp));
        Ok(tok)
    }

    fn cache(&self) -> std::sync::RwLockReadGuard<'_, HashMap<[u8; 32], (Context, Instant)>> {
        self.inner.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    fn cache_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<[u8; 32], (Context, Instant)>> {
        self.inner.cache.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Builds a context from a Keystone token document; also returns `expires_at` (unix µs).
fn context_from(body: &Value, token_id: &str) -> Option<(Context, Option<i64>)> {
    let t = body.get("token")?;
    let s = |v: &Value| v.as_str().map(str::to_string);
    let mut roles: Vec<String> = t["roles"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["name"].as_str())
                .map(str::to_lowercase)
                .collect()
        })
        .unwrap_or_default();
    let extra: Vec<String> = roles
        .iter()
        .flat_map(|r| implied(r).iter().map(|s| (*s).to_string()))
        .collect();
    roles.extend(extra);
    roles.sort();
    roles.dedup();
    let ctx = Context {
        user_id: s(&t["user"]["id"])?,
        user_name: s(&t["user"]["name"]).unwrap_or_default(),
        project_id: s(&t["project"]["id"]),
        project_name: s(&t["project"]["name"]),
        domain_id: s(&t["domain"]["id"]),
        roles,
        system_scope: t.get("system").is_some_and(|v| !v.is_null()),
        token_id: token_id.to_string(),
        request_id: String::new(),
    };
    Some((ctx, t["expires_at"].as_str().and_then(parse_time)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_from_keystone_body() {
        let body = json!({"token": {
            "user": {"id": "u1", "name": "bob", "domain": {"id": "default", "name": "Default"}},
            "project": {"id": "p1", "name": "demo", "domain": {"id": "default"}},
            "roles": [{"id": "r", "name": "Member"}],
            "expires_at": "2030-01-01T00:00:00.000000Z",
        }});
        let (ctx, exp) = context_from(&body, "abcd1234").unwrap();
        assert_eq!(ctx.user_id, "u1");
        assert_eq!(ctx.project_id.as_deref(), Some("p1"));
        assert_eq!(ctx.roles, vec!["member", "reader"]);
        assert!(!ctx.system_scope);
        assert_eq!(exp, parse_time("2030-01-01T00:00:00Z"));
        assert!(context_from(&json!({"token": {}}), "x").is_none());
        assert!(context_from(&json!([]), "x").is_none());
    }

    #[test]
    fn auth_url_gets_v3() {
        let mk = |u: &str| {
            RemoteKeystone::new(KeystoneAuthtoken {
                auth_url: u.into(),
                username: "neutron".into(),
                password: "pw".into(),
                project_name: "service".into(),
                user_domain_name: "Default".into(),
                project_domain_name: "Default".into(),
                www_authenticate_uri: None,
            })
            .inner
            .v3
            .clone()
        };
        assert_eq!(mk("http://k:5000"), "http://k:5000/v3");
        assert_eq!(mk("http://k:5000/v3/"), "http://k:5000/v3");
        assert_eq!(mk("http://k/identity"), "http://k/identity/v3");
    }
}
