-- Security groups, their rules, each project's default group and the port bindings, owned by
-- neutrino-api's security_groups and security_group_rules modules.
--
-- A group's document (`body`) does not embed its rules: rules are rows of their own, so adding
-- a rule to a group of 10,000 never rewrites the group, and a group is rendered with one
-- indexed query on security_group_rules (security_group_id, ...).
CREATE TABLE security_groups (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    revision_number BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX security_groups_project ON security_groups (project_id);

-- Exactly one default group per project (Neutron's default_security_group table): creators
-- insert here first with ON CONFLICT DO NOTHING and re-read on conflict. The foreign key is
-- checked at commit so the row can be claimed before the group row is written.
CREATE TABLE default_security_group (
    project_id TEXT PRIMARY KEY,
    security_group_id TEXT NOT NULL UNIQUE
        REFERENCES security_groups (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
);

-- rule_key is Neutron's duplicate-rule key (direction, ethertype, ports, protocol number,
-- remotes, "any" prefixes folded); the unique constraint is SecurityGroupRuleExists.
-- remote_group_id cascades as in Neutron: a rule naming a deleted group goes with it.
-- remote_address_group_id has no foreign key because address_groups is created by a later
-- migration; address groups refuse or cascade deletion themselves.
CREATE TABLE security_group_rules (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    revision_number BIGINT NOT NULL,
    body TEXT NOT NULL,
    security_group_id TEXT NOT NULL REFERENCES security_groups (id) ON DELETE CASCADE,
    remote_group_id TEXT REFERENCES security_groups (id) ON DELETE CASCADE,
    remote_address_group_id TEXT,
    rule_key TEXT NOT NULL,
    CONSTRAINT security_group_rules_unique UNIQUE (security_group_id, rule_key)
);
CREATE INDEX security_group_rules_project ON security_group_rules (project_id);
CREATE INDEX security_group_rules_remote_group ON security_group_rules (remote_group_id);
CREATE INDEX security_group_rules_remote_address_group
    ON security_group_rules (remote_address_group_id);

-- Which groups each port uses (the list is also in the port document). A group with bindings
-- cannot be deleted (no cascade); bindings go with their port. The port foreign key is
-- checked at commit because the port hook writes bindings before the port row.
CREATE TABLE security_group_port_bindings (
    port_id TEXT NOT NULL
        REFERENCES ports (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    security_group_id TEXT NOT NULL REFERENCES security_groups (id),
    PRIMARY KEY (port_id, security_group_id)
);
CREATE INDEX security_group_port_bindings_group
    ON security_group_port_bindings (security_group_id);
