-- Indexes for listing (neutrino-core's list module pushes filters, sort and keyset pagination
-- to SQL): a page of a filtered collection is an index range scan in id order,
-- `WHERE network_id = $1 AND id > $marker ORDER BY id LIMIT 50`, whatever the table size.
-- Each single-column filter index becomes (column, id), which serves both the filter and the
-- order; a port is found by one of its addresses (`fixed_ips=ip_address=X`, how Nova and the
-- CLI look ports up) through ip_allocations.
DROP INDEX ports_network;
CREATE INDEX ports_network ON ports (network_id, id);
DROP INDEX ports_project;
CREATE INDEX ports_project ON ports (project_id, id);
DROP INDEX ports_device;
CREATE INDEX ports_device ON ports (device_id, id);
CREATE INDEX ports_device_owner ON ports (device_owner, id);
CREATE INDEX ports_mac ON ports (mac_address);
CREATE INDEX ip_allocations_address ON ip_allocations (ip_address);

DROP INDEX networks_project;
CREATE INDEX networks_project ON networks (project_id, id);

DROP INDEX subnets_network;
CREATE INDEX subnets_network ON subnets (network_id, id);
CREATE INDEX subnets_project ON subnets (project_id, id);

DROP INDEX floatingips_project;
CREATE INDEX floatingips_project ON floatingips (project_id, id);
DROP INDEX routers_project;
CREATE INDEX routers_project ON routers (project_id, id);
