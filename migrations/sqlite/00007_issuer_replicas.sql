-- Issuer replicas. A cluster's issuer may run as several replicas that
-- enrol with one join token: join_tokens.replicas is how many replicas of
-- the cluster may hold a live credential lineage at once through that
-- token (1: a one-time token, used up by its first enrolment; more: a join
-- secret redeemable until it expires). cluster_credentials gets one row per
-- replica (replica '' is the single issuer of a one-time token), so each
-- replica renews its own credential and a copied one is still caught.

-- +goose Up
ALTER TABLE join_tokens ADD COLUMN replicas INTEGER NOT NULL DEFAULT 1 CHECK (replicas >= 1);

CREATE TABLE cluster_credentials_new (
    cluster         TEXT    NOT NULL REFERENCES clusters (name) ON DELETE CASCADE,
    replica         TEXT    NOT NULL DEFAULT '',
    current_serial  TEXT    NOT NULL,
    previous_serial TEXT    NOT NULL DEFAULT '',
    current_used    INTEGER NOT NULL DEFAULT 0 CHECK (current_used IN (0, 1)),
    revoked         INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    newest_not_before INTEGER NOT NULL DEFAULT 0,
    lineage_since   INTEGER NOT NULL DEFAULT 0,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (cluster, replica)
) STRICT;
INSERT INTO cluster_credentials_new
    (cluster, current_serial, previous_serial, current_used, revoked, newest_not_before, lineage_since, updated_at)
    SELECT cluster, current_serial, previous_serial, current_used, revoked, newest_not_before, lineage_since, updated_at
    FROM cluster_credentials;
DROP TABLE cluster_credentials;
ALTER TABLE cluster_credentials_new RENAME TO cluster_credentials;

-- +goose Down
-- The lineages of named replicas cannot be kept in a table of one row per
-- cluster: those replicas enrol again after a downgrade.
CREATE TABLE cluster_credentials_old (
    cluster         TEXT    NOT NULL PRIMARY KEY REFERENCES clusters (name) ON DELETE CASCADE,
    current_serial  TEXT    NOT NULL,
    previous_serial TEXT    NOT NULL DEFAULT '',
    current_used    INTEGER NOT NULL DEFAULT 0 CHECK (current_used IN (0, 1)),
    revoked         INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    newest_not_before INTEGER NOT NULL DEFAULT 0,
    lineage_since   INTEGER NOT NULL DEFAULT 0,
    updated_at      INTEGER NOT NULL
) STRICT;
INSERT INTO cluster_credentials_old
    SELECT cluster, current_serial, previous_serial, current_used, revoked, newest_not_before, lineage_since, updated_at
    FROM cluster_credentials WHERE replica = '';
DROP TABLE cluster_credentials;
ALTER TABLE cluster_credentials_old RENAME TO cluster_credentials;
ALTER TABLE join_tokens DROP COLUMN replicas;
