-- Agents, DHCP scheduling and the agent sync protocol, owned by neutrino-api's agents,
-- scheduler, binding and agent_api modules.
--
-- Portable SQL: TEXT ids, BIGINT integers and 0/1 booleans, times that are compared (heartbeats)
-- as unix microseconds (BIGINT). An agent is not a standard-attribute resource in Neutron (no
-- revision_number in its API document), and its heartbeat is not a change agents must see, so
-- heartbeats update columns in place and never touch the change log.
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    agent_type TEXT NOT NULL,
    host TEXT NOT NULL,
    availability_zone TEXT,
    admin_state_up BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    -- Bumped (and logged as an `agent` change) when what hosts act on changes: configuration,
    -- availability zone, admin state, scheduling. Not on heartbeats.
    revision_number BIGINT NOT NULL,
    -- binary, topic, configurations, description, resource_versions (JSON object text).
    body TEXT NOT NULL,
    -- Neutron's uniq_agents0agent_type0host: one agent of a type per host.
    CONSTRAINT agents_type_host UNIQUE (agent_type, host)
);
CREATE INDEX agents_host ON agents (host);

-- Neutron's networkdhcpagentbindings. Both sides cascade: a deleted network or agent takes its
-- bindings along in the same transaction.
CREATE TABLE network_dhcp_agents (
    network_id TEXT NOT NULL REFERENCES networks (id) ON DELETE CASCADE,
    agent_id TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (network_id, agent_id)
);
CREATE INDEX network_dhcp_agents_agent ON network_dhcp_agents (agent_id);

-- Binding history of each port: one row per port revision at which its binding:host_id
-- changed (and one at creation). Written by the binding module inside the port's transaction.
-- It answers "which ports are bound to host H" (indexed, unlike the JSON body) and, because
-- rows outlive their port (no foreign key), "which host did this port leave / was it on when
-- it was deleted", so a change reaches the host a port moved away from. Rows of ports whose
-- changes have been trimmed from the log are trimmed with them.
CREATE TABLE port_hosts (
    port_id TEXT NOT NULL,
    revision_number BIGINT NOT NULL,
    host TEXT NOT NULL,
    network_id TEXT NOT NULL,
    PRIMARY KEY (port_id, revision_number)
);
CREATE INDEX port_hosts_host ON port_hosts (host);
CREATE INDEX port_hosts_network ON port_hosts (network_id);

INSERT INTO port_hosts (port_id, revision_number, host, network_id)
    SELECT id, revision_number, COALESCE(json_extract(body, '$."binding:host_id"'), ''), network_id
    FROM ports;

-- Small named counters of the sync protocol: 'trimmed_through' is the highest change sequence
-- removed from the log; an agent resuming from before it must resync (410).
CREATE TABLE agent_sync_state (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
