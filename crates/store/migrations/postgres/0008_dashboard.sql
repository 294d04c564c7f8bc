-- The dashboard with many connections. See `migrations/sqlite/0008_dashboard.sql`.
DROP INDEX connections_status;
CREATE INDEX connections_status ON connections (status, id);
CREATE INDEX connections_access_expiry ON connections (status, access_expires_at_ms);
CREATE INDEX connections_search ON connections (id, tenant_id, status, api, region, selling_partner_id, name);
CREATE INDEX connections_expiring ON connections (status, api, authorized_at_ms, id);
