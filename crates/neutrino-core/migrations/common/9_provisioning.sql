-- Neutron's provisioning blocks: a port on a network served by DHCP agents goes ACTIVE only
-- when its L2 agent has wired it AND a DHCP agent has loaded its host entry, so an instance
-- (or Nova, which waits for ACTIVE) never sends its first DHCPDISCOVER to a dnsmasq that does
-- not know it yet. entity: 'DHCP' (waiting for a DHCP agent's dhcp-ready report) or 'L2'
-- (the L2 agent reported the port up while the DHCP block was still there: recorded so the
-- port goes ACTIVE when the DHCP block goes). Rows go with their port.
CREATE TABLE provisioning_blocks (
    port_id TEXT NOT NULL REFERENCES ports (id) ON DELETE CASCADE,
    entity TEXT NOT NULL,
    PRIMARY KEY (port_id, entity)
);
