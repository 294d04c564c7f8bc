-- The dashboard with many connections: a status's connections in id order (the filtered lists
-- and the overview stop after a page instead of sorting every match), expired access tokens
-- counted from an index, the authorizations nearing 365 days found oldest first without reading
-- every active connection, and the search scanning a narrow index (id order, the filtered
-- columns, the searched ones) instead of the table, whose rows carry the sealed tokens.
DROP INDEX connections_status;
CREATE INDEX connections_status ON connections (status, id);
CREATE INDEX connections_access_expiry ON connections (status, access_expires_at_ms);
CREATE INDEX connections_search ON connections (id, tenant_id, status, api, region, selling_partner_id, name);
CREATE INDEX connections_expiring ON connections (status, api, authorized_at_ms, id);
