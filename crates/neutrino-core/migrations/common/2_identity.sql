-- Identity (embedded Keystone v3 subset), owned by neutrino-identity.
-- Portable SQL: TEXT ids, BIGINT integers and 0/1 booleans, times as unix microseconds
-- (BIGINT) where they are compared, JSON objects as TEXT. Names are unique per domain as in
-- Keystone; role names are global.

CREATE TABLE identity_domains (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    enabled BIGINT NOT NULL DEFAULT 1,
    extra TEXT NOT NULL DEFAULT '{}',
    CONSTRAINT identity_domains_name UNIQUE (name)
);

CREATE TABLE identity_projects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    domain_id TEXT NOT NULL REFERENCES identity_domains (id),
    description TEXT NOT NULL DEFAULT '',
    enabled BIGINT NOT NULL DEFAULT 1,
    extra TEXT NOT NULL DEFAULT '{}',
    CONSTRAINT identity_projects_name UNIQUE (domain_id, name)
);

CREATE TABLE identity_users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    domain_id TEXT NOT NULL REFERENCES identity_domains (id),
    enabled BIGINT NOT NULL DEFAULT 1,
    -- argon2 PHC string; NULL: the user cannot log in with a password.
    password_hash TEXT,
    default_project_id TEXT,
    extra TEXT NOT NULL DEFAULT '{}',
    CONSTRAINT identity_users_name UNIQUE (domain_id, name)
);

CREATE TABLE identity_roles (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    extra TEXT NOT NULL DEFAULT '{}',
    CONSTRAINT identity_roles_name UNIQUE (name)
);

-- A user's role on a target: target_type 'project' | 'domain' | 'system' (target_id 'all').
CREATE TABLE identity_assignments (
    actor_id TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id TEXT NOT NULL,
    role_id TEXT NOT NULL REFERENCES identity_roles (id) ON DELETE CASCADE,
    PRIMARY KEY (actor_id, target_type, target_id, role_id)
);
CREATE INDEX identity_assignments_target ON identity_assignments (target_type, target_id);
CREATE INDEX identity_assignments_role ON identity_assignments (role_id);

-- Issued tokens; only sha256(token) is stored, never the token.
CREATE TABLE identity_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    scope_type TEXT NOT NULL,
    scope_id TEXT NOT NULL,
    methods TEXT NOT NULL,
    audit_ids TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX identity_tokens_user ON identity_tokens (user_id);
CREATE INDEX identity_tokens_expires ON identity_tokens (expires_at);
