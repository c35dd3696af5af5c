-- L3: routers, their ports, extra routes (in the router document), floating IPs, port
-- forwardings and L3 agent scheduling, owned by neutrino-api's routers, floatingips,
-- port_forwardings and l3_scheduler modules.
--
-- Each resource table keeps the API document in `body` plus the columns the database must
-- constrain or index, as the core tables do (decision 0001).
CREATE TABLE routers (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    revision_number BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX routers_project ON routers (project_id);

-- Neutron's routerports: which ports are a router's (its gateway and its interfaces). The
-- primary key makes a port belong to at most one router; both sides cascade, so a port or a
-- router never leaves a dangling row.
CREATE TABLE router_ports (
    port_id TEXT PRIMARY KEY REFERENCES ports (id) ON DELETE CASCADE,
    router_id TEXT NOT NULL REFERENCES routers (id) ON DELETE CASCADE,
    port_type TEXT NOT NULL
);
CREATE INDEX router_ports_router ON router_ports (router_id);

-- Floating IPs. The unique constraint is Neutron's
-- uniq_floatingips0floatingnetworkid0fixedportid0fixedipaddress: a fixed IP has at most one
-- floating IP per external network (FloatingIPPortAlreadyAssociated); NULLs (unassociated)
-- never collide. A floating IP's own port (device_owner network:floatingip, device_id the
-- floating IP) is found through ports.device_id.
CREATE TABLE floatingips (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    revision_number BIGINT NOT NULL,
    body TEXT NOT NULL,
    floating_network_id TEXT NOT NULL REFERENCES networks (id),
    port_id TEXT REFERENCES ports (id),
    fixed_ip_address TEXT,
    router_id TEXT REFERENCES routers (id),
    CONSTRAINT floatingips_fixed UNIQUE (floating_network_id, port_id, fixed_ip_address)
);
CREATE INDEX floatingips_project ON floatingips (project_id);
CREATE INDEX floatingips_port ON floatingips (port_id);
CREATE INDEX floatingips_router ON floatingips (router_id);

-- Floating IP port forwardings, with Neutron's two unique constraints: one forwarding per
-- (floating IP, protocol, external port) and per (protocol, internal port, internal address,
-- internal port number). Ports are mirrored as text.
CREATE TABLE port_forwardings (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    revision_number BIGINT NOT NULL,
    body TEXT NOT NULL,
    floatingip_id TEXT NOT NULL REFERENCES floatingips (id) ON DELETE CASCADE,
    internal_port_id TEXT NOT NULL REFERENCES ports (id) ON DELETE CASCADE,
    internal_ip_address TEXT NOT NULL,
    protocol TEXT NOT NULL,
    external_port TEXT NOT NULL,
    internal_port TEXT NOT NULL,
    CONSTRAINT port_forwardings_external UNIQUE (floatingip_id, protocol, external_port),
    CONSTRAINT port_forwardings_internal
        UNIQUE (protocol, internal_port_id, internal_ip_address, internal_port)
);
CREATE INDEX port_forwardings_internal_port ON port_forwardings (internal_port_id);

-- Neutron's routerl3agentbindings. binding_index is unique per router: a legacy router holds
-- index 1 only, so it is hosted by exactly one agent however many servers schedule it at once;
-- an HA router holds 1..max_l3_agents_per_router. Both sides cascade.
CREATE TABLE router_l3_agents (
    router_id TEXT NOT NULL REFERENCES routers (id) ON DELETE CASCADE,
    agent_id TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    binding_index BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (router_id, agent_id),
    CONSTRAINT router_l3_agents_index UNIQUE (router_id, binding_index)
);
CREATE INDEX router_l3_agents_agent ON router_l3_agents (agent_id);
