//! The request context: who is calling, in which project, with which roles.
//!
//! Built once per request by the authentication layer from a validated token (embedded
//! identity or external Keystone) and read by policy and services. It must never be built
//! from unauthenticated client headers.

/// The caller of an API request.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Keystone user id.
    pub user_id: String,
    /// Keystone user name.
    pub user_name: String,
    /// Project the token is scoped to (None for domain- or system-scoped tokens).
    pub project_id: Option<String>,
    /// Name of that project.
    pub project_name: Option<String>,
    /// Domain of a domain-scoped token.
    pub domain_id: Option<String>,
    /// Role names on the scope, lower-case.
    pub roles: Vec<String>,
    /// True for system-scoped tokens.
    pub system_scope: bool,
    /// Id of the token (for logs and revocation), never the secret.
    pub token_id: String,
    /// `req-<uuid>` of this request.
    pub request_id: String,
}

impl Context {
    /// A context with admin rights in `project_id` (for internal use and tests).
    pub fn admin(project_id: &str) -> Self {
        Context {
            user_id: "neutrino".into(),
            user_name: "neutrino".into(),
            project_id: Some(project_id.into()),
            roles: vec!["admin".into(), "member".into(), "reader".into()],
            ..Default::default()
        }
    }

    /// Has the `admin` role (on any scope, as Neutron's `context_is_admin`).
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
    }

    /// May write in its project. Role implication as in Keystone's default (admin implies
    /// member implies reader); any role other than `reader` counts as member, as in Neutron's
    /// long-standing `admin_or_owner` behaviour, so custom roles like `rbacdemo` keep working.
    pub fn is_member(&self) -> bool {
        self.roles.iter().any(|r| r != "reader")
    }

    /// May read in its project (any role).
    pub fn is_reader(&self) -> bool {
        !self.roles.is_empty()
    }

    /// True when the caller's project owns `project_id`.
    pub fn owns(&self, project_id: &str) -> bool {
        self.project_id.as_deref() == Some(project_id)
    }

    /// The project id to record as owner of new resources, or "" when unscoped.
    pub fn project(&self) -> &str {
        self.project_id.as_deref().unwrap_or("")
    }
}
