-- Core Neutron resources. Each table keeps the API document in `body` (JSON text) and
-- mirrors into columns only what the database must constrain or index.

CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    resource TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    op TEXT NOT NULL,
    revision_number BIGINT NOT NULL,
    project_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE networks (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    revision_number BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX networks_project ON networks (project_id);

CREATE TABLE subnetpools (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    revision_number BIGINT NOT NULL,
    body TEXT NOT NULL
);

CREATE TABLE subnets (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    revision_number BIGINT NOT NULL,
    body TEXT NOT NULL,
    network_id TEXT NOT NULL REFERENCES networks (id),
    subnetpool_id TEXT REFERENCES subnetpools (id),
    cidr TEXT NOT NULL
);
CREATE INDEX subnets_network ON subnets (network_id);
CREATE INDEX subnets_pool ON subnets (subnetpool_id);

CREATE TABLE ports (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    revision_number BIGINT NOT NULL,
    body TEXT NOT NULL,
    network_id TEXT NOT NULL REFERENCES networks (id),
    mac_address TEXT NOT NULL,
    device_id TEXT,
    device_owner TEXT,
    CONSTRAINT ports_network_mac UNIQUE (network_id, mac_address)
);
CREATE INDEX ports_network ON ports (network_id);
CREATE INDEX ports_project ON ports (project_id);
CREATE INDEX ports_device ON ports (device_id);

-- One row per fixed IP: the primary key makes an address unique within its network.
CREATE TABLE ip_allocations (
    network_id TEXT NOT NULL REFERENCES networks (id),
    ip_address TEXT NOT NULL,
    subnet_id TEXT NOT NULL REFERENCES subnets (id),
    port_id TEXT NOT NULL REFERENCES ports (id) ON DELETE CASCADE,
    PRIMARY KEY (network_id, ip_address)
);
CREATE INDEX ip_allocations_subnet ON ip_allocations (subnet_id);
CREATE INDEX ip_allocations_port ON ip_allocations (port_id);

CREATE TABLE quotas (
    project_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    hard_limit BIGINT NOT NULL,
    PRIMARY KEY (project_id, resource)
);
