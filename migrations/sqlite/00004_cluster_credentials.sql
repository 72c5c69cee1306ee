-- Issuer credentials the root accepts, one row per enrolled cluster: the
-- serial of the cluster's current credential and of the one it replaced.
-- Every Renew replaces the current credential; a credential that is neither
-- (or the previous one once the current one has been used) is a copy in use
-- somewhere else. Times are integer Unix seconds, UTC.

-- +goose Up
-- current_used is 1 once the holder of current_serial authenticated with
-- it; from then on previous_serial is no longer accepted. revoked is 1 when
-- the root saw a credential reused: no credential of the cluster is accepted
-- until it enrols again with a new join token. lineage_since is the
-- NotBefore of the credential the last enrolment issued (0: unknown): an
-- older credential belongs to an earlier enrolment.
CREATE TABLE cluster_credentials (
    cluster         TEXT    NOT NULL PRIMARY KEY REFERENCES clusters (name) ON DELETE CASCADE,
    current_serial  TEXT    NOT NULL,
    previous_serial TEXT    NOT NULL DEFAULT '',
    current_used    INTEGER NOT NULL DEFAULT 0 CHECK (current_used IN (0, 1)),
    revoked         INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    lineage_since   INTEGER NOT NULL DEFAULT 0,
    updated_at      INTEGER NOT NULL
) STRICT;

-- +goose Down
DROP TABLE cluster_credentials;
