//! neutrino-identity: an embedded Keystone v3 subset, and validation against an external
//! Keystone.
//!
//! Owns the identity HTTP API served on the identity port (version discovery, tokens,
//! domains, projects, users, roles, role assignments, a read-only service catalog), the
//! identity tables (`identity_*`), and turning a token into a [`neutrino_core::Context`] for
//! the network API ([`Identity::validate`], [`RemoteKeystone::validate`], [`TokenValidator`]).
//! It is just enough Keystone for python-openstackclient, openstacksdk/keystoneauth1 and
//! Tempest with dynamic credentials; see `/work/notes/keystone-tempest-ref.md` for the
//! traffic it was shaped after.
//!
//! It must never store or log a password or token in clear (argon2 PHC strings and sha256
//! token hashes only), never build a context from anything but a validated token, and never
//! panic on client input.

#![warn(missing_docs)]

mod admin;
mod api;
mod catalog;
mod error;
mod password;
mod remote;
mod store;
mod token;

use std::sync::Arc;

use neutrino_core::{ApiError, Context, Db};

pub use error::IdentityError;
pub use remote::RemoteKeystone;

use store::{Domain, Project, Role, Target, User};

/// Id of the domain created by [`Identity::bootstrap`] (Keystone's `default`).
pub const DEFAULT_DOMAIN_ID: &str = "default";

/// Settings of the embedded identity service.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Token lifetime in seconds (Keystone's `[token] expiration`, default 3600).
    pub token_expiration_secs: i64,
    /// Public URL of this identity service, e.g. `http://127.0.0.1:5000` (no `/v3`).
    pub identity_url: String,
    /// Public URL of the network API, unversioned, e.g. `http://127.0.0.1:9696`.
    pub network_url: String,
    /// Region of the catalog endpoints (`RegionOne`).
    pub region: String,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            token_expiration_secs: 3600,
            identity_url: "http://127.0.0.1:5000".into(),
            network_url: "http://127.0.0.1:9696".into(),
            region: "RegionOne".into(),
        }
    }
}

/// The embedded identity service; cheap to clone.
#[derive(Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    cfg: IdentityConfig,
    catalog: catalog::Catalog,
    tokens: token::TokenCache,
    passwords: password::VerifyCache,
}

impl Identity {
    /// An identity service on `db` (migrated with [`Db::migrate`]).
    pub fn new(db: Db, mut cfg: IdentityConfig) -> Identity {
        cfg.identity_url = cfg.identity_url.trim_end_matches('/').to_string();
        cfg.network_url = cfg.network_url.trim_end_matches('/').to_string();
        if cfg.token_expiration_secs <= 0 {
            cfg.token_expiration_secs = 3600;
        }
        let catalog = catalog::Catalog::new(&cfg);
        Identity {
            inner: Arc::new(Inner {
                db,
                cfg,
                catalog,
                tokens: token::TokenCache::default(),
                passwords: password::VerifyCache::default(),
            }),
        }
    }

    pub(crate) fn db(&self) -> &Db {
        &self.inner.db
    }

    pub(crate) fn cfg(&self) -> &IdentityConfig {
        &self.inner.cfg
    }

    pub(crate) fn catalog(&self) -> &catalog::Catalog {
        &self.inner.catalog
    }

    pub(crate) fn tokens(&self) -> &token::TokenCache {
        &self.inner.tokens
    }

    pub(crate) fn passwords(&self) -> &password::VerifyCache {
        &self.inner.passwords
    }

    /// Creates what Keystone's bootstrap creates, idempotently: domain `default` ("Default"),
    /// projects `admin` and `service`, roles `admin`, `member`, `reader`, and user `admin`
    /// with `admin_password` holding role admin on project `admin` and on the system. An
    /// existing admin user keeps its password. Returns whether the admin user was created.
    pub async fn bootstrap(&self, admin_password: &str) -> Result<bool, IdentityError> {
        let (admin_project, _) = self.ensure_base().await?;
        let (user_id, created) = self.ensure_user("admin", admin_password, false).await?;
        let admin_role = self.role_id("admin").await?;
        let mut tx = self.db().begin().await?;
        store::grant(
            &mut tx,
            &user_id,
            &Target::Project(admin_project),
            &admin_role,
        )
        .await?;
        store::grant(&mut tx, &user_id, &Target::System, &admin_role).await?;
        self.db().commit(tx).await?;
        if created {
            tracing::info!(user_id = %user_id, "identity bootstrap created the admin user");
        }
        Ok(created)
    }

    /// Creates (idempotently) a service user in domain `default` with role admin on project
    /// `service`. The configured password is the source of truth: an existing user whose
    /// password differs gets `password`.
    pub async fn ensure_service_user(
        &self,
        name: &str,
        password: &str,
    ) -> Result<(), IdentityError> {
        let (_, service_project) = self.ensure_base().await?;
        let (user_id, _) = self.ensure_user(name, password, true).await?;
        let admin_role = self.role_id("admin").await?;
        let mut tx = self.db().begin().await?;
        store::grant(
            &mut tx,
            &user_id,
            &Target::Project(service_project),
            &admin_role,
        )
        .await?;
        self.db().commit(tx).await?;
        Ok(())
    }

    /// Validates a token for the network API: the caller's context, or 401.
    pub async fn validate(&self, token: &str) -> Result<Context, ApiError> {
        match self.lookup(token).await {
            Ok((_, ctx)) => Ok(ctx),
            Err(e) => Err(e.into_api_error()),
        }
    }

    async fn role_id(&self, name: &str) -> Result<String, IdentityError> {
        store::role_by_name(self.db().reader(), name)
            .await?
            .map(|r| r.id)
            .ok_or_else(|| IdentityError::not_found("role", name))
    }

    /// Domain `default`, projects `admin`/`service`, roles admin/member/reader. Returns the
    /// ids of projects admin and service. Safe against concurrent servers (ON CONFLICT).
    async fn ensure_base(&self) -> Result<(String, String), IdentityError> {
        let mut tx = self.db().begin().await?;
        store::insert_domain(
            &mut tx,
            &Domain {
                id: DEFAULT_DOMAIN_ID.into(),
                name: "Default".into(),
                description: "The default domain".into(),
                enabled: true,
                extra: Default::default(),
            },
            true,
        )
        .await?;
        for (name, description) in [
            ("admin", "Bootstrap project for initializing the cloud."),
            ("service", "Project for service users."),
        ] {
            store::insert_project(
                &mut tx,
                &Project {
                    id: new_id(),
                    name: name.into(),
                    domain_id: DEFAULT_DOMAIN_ID.into(),
                    description: description.into(),
                    enabled: true,
                    extra: Default::default(),
                },
                true,
            )
            .await?;
        }
        for name in ["admin", "member", "reader"] {
            store::insert_role(
                &mut tx,
                &Role {
                    id: new_id(),
                    name: name.into(),
                    description: String::new(),
                    extra: Default::default(),
                },
                true,
            )
            .await?;
        }
        self.db().commit(tx).await?;
        let db = self.db().reader();
        let mut ids = Vec::new();
        for name in ["admin", "service"] {
            let p = store::project_by_name(db, DEFAULT_DOMAIN_ID, name)
                .await?
                .ok_or_else(|| IdentityError::not_found("project", name))?;
            ids.push(p.id);
        }
        let service = ids.pop().unwrap_or_default();
        let admin = ids.pop().unwrap_or_default();
        Ok((admin, service))
    }

    /// Creates user `name` in domain default if missing; with `reset`, an existing user
    /// whose password differs gets `password`. Returns (id, created).
    async fn ensure_user(
        &self,
        name: &str,
        password: &str,
        reset: bool,
    ) -> Result<(String, bool), IdentityError> {
        let db = self.db().reader();
        if let Some(u) = store::user_by_name(db, DEFAULT_DOMAIN_ID, name).await? {
            if reset {
                let ok = match &u.password_hash {
                    Some(phc) => self.passwords().verify(&u.id, phc, password).await?,
                    None => false,
                };
                if !ok || !u.enabled {
                    let mut u = u.clone();
                    u.password_hash = Some(password::hash(password).await?);
                    u.enabled = true;
                    let mut tx = self.db().begin().await?;
                    store::update_user(&mut tx, &u).await?;
                    self.db().commit(tx).await?;
                    tracing::info!(user = %name, "service user password updated from configuration");
                }
            }
            return Ok((u.id, false));
        }
        let user = User {
            id: new_id(),
            name: name.into(),
            domain_id: DEFAULT_DOMAIN_ID.into(),
            enabled: true,
            password_hash: Some(password::hash(password).await?),
            default_project_id: None,
            extra: Default::default(),
        };
        let mut tx = self.db().begin().await?;
        let created = store::insert_user(&mut tx, &user, true).await?;
        self.db().commit(tx).await?;
        if created {
            return Ok((user.id, true));
        }
        // Another server created it concurrently.
        let u = store::user_by_name(self.db().reader(), DEFAULT_DOMAIN_ID, name)
            .await?
            .ok_or_else(|| IdentityError::not_found("user", name))?;
        Ok((u.id, false))
    }
}

/// A Keystone-style id: 32 hex digits.
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Where the network API gets its caller identity from.
#[derive(Clone)]
pub enum TokenValidator {
    /// The embedded identity service.
    Local(Identity),
    /// An external Keystone (`[keystone_authtoken]`).
    Remote(RemoteKeystone),
}

impl TokenValidator {
    /// Validates a token: the caller's context, or 401 (503 if Keystone is unreachable).
    pub async fn validate(&self, token: &str) -> Result<Context, ApiError> {
        match self {
            TokenValidator::Local(i) => i.validate(token).await,
            TokenValidator::Remote(r) => r.validate(token).await,
        }
    }
}
