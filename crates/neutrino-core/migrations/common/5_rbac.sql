-- RBAC policies, address scopes and address groups, owned by neutrino-api's rbac,
-- address_scopes and address_groups modules.
--
-- rbac_policies holds one row per grant (Neutron's networkrbacs, subnetpoolrbacs, ... tables in
-- one): the API document in `body` plus the columns the database must constrain. The unique
-- constraint is Neutron's DuplicateRbacPolicy: one grant per object, action and target. There
-- is no foreign key to the object because object_type picks the table; objects delete their
-- grants in the same transaction as themselves.
CREATE TABLE rbac_policies (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    revision_number BIGINT NOT NULL,
    body TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    action TEXT NOT NULL,
    target_project TEXT NOT NULL,
    CONSTRAINT rbac_policies_grant UNIQUE (object_type, object_id, action, target_project)
);
CREATE INDEX rbac_policies_object ON rbac_policies (object_id);
CREATE INDEX rbac_policies_project ON rbac_policies (project_id);

CREATE TABLE address_scopes (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    revision_number BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX address_scopes_project ON address_scopes (project_id);

-- A subnet pool's scope is mirrored into a column so that a scope in use cannot be deleted
-- (foreign key) and networks find their scopes with one join.
ALTER TABLE subnetpools ADD COLUMN address_scope_id TEXT REFERENCES address_scopes (id);
CREATE INDEX subnetpools_scope ON subnetpools (address_scope_id);

CREATE TABLE address_groups (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    revision_number BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX address_groups_project ON address_groups (project_id);
