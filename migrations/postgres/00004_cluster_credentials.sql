-- Issuer credentials the root accepts, one row per enrolled cluster: the
-- serial of the cluster's current credential and of the one it replaced.
-- Every Renew replaces the current credential; a credential that is neither
-- (or the previous one once the current one has been used) is a copy in use
-- somewhere else. Times are bigint Unix seconds, UTC.

-- +goose Up
-- current_used is true once the holder of current_serial authenticated with
-- it; from then on previous_serial is no longer accepted. revoked is true
-- when the root saw a credential reused: no credential of the cluster is
-- accepted until it enrols again with a new join token. newest_not_before is the
-- NotBefore of the newest credential issued to the cluster (the current
-- one's; kept when the lineage is revoked). lineage_since is the
-- newest_not_before of the lineage the last enrolment replaced (0: none):
-- a credential not after it belongs to an earlier enrolment.
CREATE TABLE cluster_credentials (
    cluster         text COLLATE "C" NOT NULL PRIMARY KEY REFERENCES clusters (name) ON DELETE CASCADE,
    current_serial  text COLLATE "C" NOT NULL,
    previous_serial text COLLATE "C" NOT NULL DEFAULT '',
    current_used    boolean NOT NULL DEFAULT false,
    revoked         boolean NOT NULL DEFAULT false,
    newest_not_before bigint NOT NULL DEFAULT 0,
    lineage_since   bigint  NOT NULL DEFAULT 0,
    updated_at      bigint  NOT NULL
);

-- +goose Down
DROP TABLE cluster_credentials;
