-- Initial schema: issued certificates, the hash-chained audit log and its
-- head, and the tables later features fill (revocations, intermediates,
-- clusters). Times are bigint Unix seconds, UTC; absent text is ''. Text that
-- is looked up or sorted is COLLATE "C": byte order, as in SQLite, whatever
-- the database's locale.

-- +goose Up
CREATE TABLE certificates (
    serial      text COLLATE "C" NOT NULL PRIMARY KEY, -- lower-case hex, no separators
    spiffe_id   text COLLATE "C" NOT NULL,
    cluster     text COLLATE "C" NOT NULL,
    not_before  bigint NOT NULL,
    not_after   bigint NOT NULL,
    fingerprint text   NOT NULL,                       -- lower-case hex SHA-256 of the DER
    pod_uid     text   NOT NULL DEFAULT '',
    created_at  bigint NOT NULL                        -- when the store recorded it
);

-- Listing is newest first (not_before DESC, serial), optionally narrowed by
-- SPIFFE ID or cluster; retention and ActiveAt filters use not_after.
CREATE INDEX certificates_spiffe_id ON certificates (spiffe_id, not_before);
CREATE INDEX certificates_cluster ON certificates (cluster, not_before);
CREATE INDEX certificates_not_before ON certificates (not_before);
CREATE INDEX certificates_not_after ON certificates (not_after);

CREATE TABLE audit_events (
    seq       bigint NOT NULL PRIMARY KEY CHECK (seq > 0),
    time      bigint NOT NULL,
    actor     text   NOT NULL,
    action    text   NOT NULL,
    cluster   text   NOT NULL DEFAULT '',
    spiffe_id text   NOT NULL DEFAULT '',
    serial    text   NOT NULL DEFAULT '',
    detail    text   NOT NULL DEFAULT '',
    prev_hash bytea  NOT NULL CHECK (length(prev_hash) = 32),
    hash      bytea  NOT NULL CHECK (length(hash) = 32)
);

CREATE INDEX audit_events_time ON audit_events (time);
-- No index on serial: serials are random, so such an index would dirty a
-- random page on every issuance (see the SQLite schema).

-- audit_chain_head is the chain's one-row head: the seq and hash of the last
-- event. Every transaction that appends events locks it (SELECT ... FOR
-- UPDATE) and advances it before COMMIT, so appends from any number of
-- issuer replicas are serialized by the database: seq has no gaps and every
-- prev_hash is the hash of the event committed just before. Verification also
-- compares the chain's last event with this row, which shows a deleted tail.
CREATE TABLE audit_chain_head (
    id   boolean PRIMARY KEY DEFAULT true CHECK (id),
    seq  bigint  NOT NULL CHECK (seq >= 0),
    hash bytea   CHECK ((seq = 0 AND hash IS NULL) OR (hash IS NOT NULL AND length(hash) = 32))
);
INSERT INTO audit_chain_head (id, seq, hash) VALUES (true, 0, NULL);

-- The audit log is append-only and its head only moves forward. These
-- triggers stop accidents and honest code; they do not stop a superuser,
-- which is what the hash chain is for.
-- +goose StatementBegin
CREATE FUNCTION meshca_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION meshca_audit_head_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seq < OLD.seq THEN
        RAISE EXCEPTION 'audit_chain_head cannot move back from seq % to %', OLD.seq, NEW.seq;
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION meshca_audit_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION meshca_audit_append_only();
CREATE TRIGGER audit_chain_head_no_delete BEFORE DELETE ON audit_chain_head
    FOR EACH ROW EXECUTE FUNCTION meshca_audit_append_only();
CREATE TRIGGER audit_chain_head_no_truncate BEFORE TRUNCATE ON audit_chain_head
    FOR EACH STATEMENT EXECUTE FUNCTION meshca_audit_append_only();
CREATE TRIGGER audit_chain_head_forward BEFORE UPDATE ON audit_chain_head
    FOR EACH ROW EXECUTE FUNCTION meshca_audit_head_forward();

-- Revocations (filled by `meshca admin revoke`): each row denies one serial,
-- one SPIFFE ID, or one cluster intermediate (by its serial). Issuer
-- replicas load the deny-list at start and then poll by id (or listen for
-- NOTIFY), so id only grows.
CREATE TABLE revocations (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       text   NOT NULL CHECK (kind IN ('serial', 'spiffe_id', 'intermediate')),
    value      text COLLATE "C" NOT NULL,
    cluster    text COLLATE "C" NOT NULL DEFAULT '',
    reason     text   NOT NULL DEFAULT '',
    revoked_by text   NOT NULL,
    revoked_at bigint NOT NULL,
    -- expires_at is when the entry can leave CRLs: the latest NotAfter of
    -- what it revokes; 0 means never.
    expires_at bigint NOT NULL DEFAULT 0,
    UNIQUE (kind, value)
);
CREATE INDEX revocations_cluster ON revocations (cluster, kind);

-- Cluster intermediates signed by the root, so the root can list, rotate and
-- revoke them and every replica can find its cluster's current one.
CREATE TABLE intermediates (
    serial       text COLLATE "C" NOT NULL PRIMARY KEY,
    cluster      text COLLATE "C" NOT NULL,
    trust_domain text   NOT NULL,
    not_before   bigint NOT NULL,
    not_after    bigint NOT NULL,
    fingerprint  text   NOT NULL,
    certificate  bytea  NOT NULL, -- DER
    created_at   bigint NOT NULL
);
CREATE INDEX intermediates_cluster ON intermediates (cluster, not_after);
CREATE INDEX intermediates_not_after ON intermediates (not_after);

-- Clusters enrolled with the root.
CREATE TABLE clusters (
    name         text COLLATE "C" NOT NULL PRIMARY KEY,
    trust_domain text   NOT NULL,
    created_at   bigint NOT NULL
);

-- +goose Down
DROP TABLE clusters;
DROP TABLE intermediates;
DROP TABLE revocations;
DROP TABLE audit_chain_head;
DROP TABLE audit_events;
DROP FUNCTION meshca_audit_head_forward();
DROP FUNCTION meshca_audit_append_only();
DROP TABLE certificates;
