-- Issuer credentials the root accepts, one row per enrolled cluster: the
-- serial of the cluster's current credential and of the one it replaced.
-- Every Renew replaces the current credential; a credential that is neither
-- (or the previous one once the current one has been used) is a copy in use
-- somewhere else. Times are integer Unix seconds, UTC.

-- +goose Up
-- current_used is 1 once the holder of current_serial authenticated with
-- it; from then on previous_serial is no longer accepted. revoked is 1 when
-- the root saw a credential reused: no credential of the cluster is accepted
-- until it enrols again with a new join token. newest_not_before is the
-- NotBefore of the newest credential issued to the cluster (the current
-- one's; kept when the lineage is revoked). lineage_since is the
-- newest_not_before of the lineage the last enrolment replaced (0: none):
-- a credential not after it belongs to an earlier enrolment.
CREATE TABLE cluster_credentials (
    cluster         TEXT    NOT NULL PRIMARY KEY REFERENCES clusters (name) ON DELETE CASCADE,
    current_serial  TEXT    NOT NULL,
    previous_serial TEXT    NOT NULL DEFAULT '',
    current_used    INTEGER NOT NULL DEFAULT 0 CHECK (current_used IN (0, 1)),
    revoked         INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    newest_not_before INTEGER NOT NULL DEFAULT 0,
    lineage_since   INTEGER NOT NULL DEFAULT 0,
    updated_at      INTEGER NOT NULL
) STRICT;

-- +goose Down
DROP TABLE cluster_credentials;
