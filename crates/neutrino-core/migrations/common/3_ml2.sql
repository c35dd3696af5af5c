-- ML2: network segments and segmentation-ID allocations, owned by neutrino-api's ml2 module.
--
-- network_segments holds each segment's API document (`body`, the `segment` extension's
-- resource) plus the columns the database indexes. The foreign keys to networks are
-- DEFERRABLE INITIALLY DEFERRED because ML2 reserves a network's segments in the creating
-- transaction before the network row itself is inserted (Neutron does the same inside one
-- transaction); the check happens at COMMIT.
CREATE TABLE network_segments (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    revision_number BIGINT NOT NULL,
    body TEXT NOT NULL,
    network_id TEXT NOT NULL REFERENCES networks (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    network_type TEXT NOT NULL,
    physical_network TEXT,
    segmentation_id BIGINT,
    segment_index BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX network_segments_network ON network_segments (network_id);

-- One row per segmentation ID in use. The primary key makes an ID unique per type and
-- physical network ('' when the type has none); a flat network holds (flat, physnet, 0), so a
-- physical network carries at most one flat network. Rows exist only for allocated IDs: the
-- configured ranges are never pre-populated, and allocation is INSERT ... ON CONFLICT DO NOTHING.
CREATE TABLE segment_allocations (
    network_type TEXT NOT NULL,
    physical_network TEXT NOT NULL,
    segmentation_id BIGINT NOT NULL,
    network_id TEXT NOT NULL REFERENCES networks (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    segment_id TEXT NOT NULL REFERENCES network_segments (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    PRIMARY KEY (network_type, physical_network, segmentation_id)
);
CREATE INDEX segment_allocations_network ON segment_allocations (network_id);
CREATE INDEX segment_allocations_segment ON segment_allocations (segment_id);
