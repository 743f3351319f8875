-- Digest credentials that inbound INVITEs from a trunk must answer (RFC 3261 22.4):
-- both set, or both null (no authentication of inbound calls). The password is
-- stored like the trunk's outbound `password`.
ALTER TABLE trunks ADD COLUMN inbound_auth_username TEXT;
ALTER TABLE trunks ADD COLUMN inbound_auth_password TEXT;
