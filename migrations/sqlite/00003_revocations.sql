-- Revocations: the deny-list that `meshca admin revoke` fills and every
-- issuer replica reloads. PostgreSQL created the table in 00001 and extends
-- it in its own 00003; SQLite gets it here, with the same columns. Times are
-- integer Unix seconds, UTC.

-- +goose Up
-- Each row denies one serial, one SPIFFE ID, one cluster or one cluster
-- intermediate (by its serial). expires_at is when the entry can leave CRLs
-- and the deny-list (the latest NotAfter of what it revokes); 0 means never.
-- lifted_at is 0 while the entry is in force, then when it was lifted.
-- An entry revoked again once lifted gets a new row, and
-- AUTOINCREMENT never reuses an id, not even that of a deleted row, so the
-- new id is larger than every id before it (see store.Revocation.ID).
CREATE TABLE revocations (
    id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL CHECK (kind IN ('serial', 'spiffe_id', 'cluster', 'intermediate')),
    value      TEXT    NOT NULL,
    cluster    TEXT    NOT NULL DEFAULT '',
    reason     TEXT    NOT NULL DEFAULT '',
    revoked_by TEXT    NOT NULL,
    revoked_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL DEFAULT 0,
    lifted_at  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (kind, value)
) STRICT;
CREATE INDEX revocations_cluster ON revocations (cluster, kind);
-- The entries not lifted, in id order: what every replica reads each poll.
CREATE INDEX revocations_in_force ON revocations (id) WHERE lifted_at = 0;

-- +goose Down
DROP TABLE revocations;
