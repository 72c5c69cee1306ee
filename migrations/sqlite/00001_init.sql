-- Initial schema: issued certificates and the hash-chained audit log.
-- Times are integer Unix seconds, UTC. Tables are STRICT so a wrong type is
-- an error rather than a silent conversion.

-- +goose Up
CREATE TABLE certificates (
    serial      TEXT    NOT NULL PRIMARY KEY, -- lower-case hex, no separators
    spiffe_id   TEXT    NOT NULL,
    cluster     TEXT    NOT NULL,
    not_before  INTEGER NOT NULL,
    not_after   INTEGER NOT NULL,
    fingerprint TEXT    NOT NULL,             -- lower-case hex SHA-256 of the DER
    pod_uid     TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL              -- when the store recorded it
) STRICT;

-- Listing is newest first (not_before DESC, serial), optionally narrowed by
-- SPIFFE ID or cluster; expiry sweeps and ActiveAt filters use not_after.
CREATE INDEX certificates_spiffe_id ON certificates (spiffe_id, not_before);
CREATE INDEX certificates_cluster ON certificates (cluster, not_before);
CREATE INDEX certificates_not_before ON certificates (not_before);
CREATE INDEX certificates_not_after ON certificates (not_after);

CREATE TABLE audit_events (
    seq       INTEGER NOT NULL PRIMARY KEY CHECK (seq > 0),
    time      INTEGER NOT NULL,
    actor     TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    cluster   TEXT    NOT NULL DEFAULT '',
    spiffe_id TEXT    NOT NULL DEFAULT '',
    serial    TEXT    NOT NULL DEFAULT '',
    detail    TEXT    NOT NULL DEFAULT '',
    prev_hash BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    hash      BLOB    NOT NULL CHECK (length(hash) = 32)
) STRICT;

CREATE INDEX audit_events_time ON audit_events (time);
-- No index on serial: serials are random, so such an index would dirty a
-- random page on every issuance; a certificate's events are found through
-- the certificate's created_at and the time index.

-- The audit log is append-only. These triggers stop accidents and honest
-- code; they do not stop someone with write access to the file, which is
-- what the hash chain is for.
-- +goose StatementBegin
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
-- +goose StatementEnd

-- +goose Down
DROP TABLE audit_events;
DROP TABLE certificates;
