-- Instance data served by the metadata service (neutrino-api's metadata module): one document
-- per instance id (a Nova server id, or a probe's `probe-<name>`), holding the hostname,
-- public keys, user data and metadata an operator attached. The instance's ports are found
-- through ports.device_id; no foreign key, since a document may be attached before the
-- instance's ports exist.
CREATE TABLE instance_metadata (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    revision_number BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX instance_metadata_project ON instance_metadata (project_id);
