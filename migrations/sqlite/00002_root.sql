-- Root service: enrolled clusters, their one-time join tokens, the cluster
-- intermediates the roots signed, and the roots themselves. The PostgreSQL
-- schema created clusters and intermediates in 00001; SQLite gets them here,
-- with the same columns. Times are integer Unix seconds, UTC.

-- +goose Up
CREATE TABLE clusters (
    name         TEXT    NOT NULL PRIMARY KEY,
    trust_domain TEXT    NOT NULL,
    created_at   INTEGER NOT NULL
) STRICT;

-- Only the token's hash is stored (lower-case hex SHA-256). used_at is 0
-- until the token is redeemed, then when it was; a token is redeemed once.
CREATE TABLE join_tokens (
    hash       TEXT    NOT NULL PRIMARY KEY,
    cluster    TEXT    NOT NULL REFERENCES clusters (name) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX join_tokens_cluster ON join_tokens (cluster);

CREATE TABLE intermediates (
    serial           TEXT    NOT NULL PRIMARY KEY,
    cluster          TEXT    NOT NULL,
    trust_domain     TEXT    NOT NULL,
    not_before       INTEGER NOT NULL,
    not_after        INTEGER NOT NULL,
    fingerprint      TEXT    NOT NULL,
    certificate      BLOB    NOT NULL, -- DER
    created_at       INTEGER NOT NULL,
    root_fingerprint TEXT    NOT NULL DEFAULT '' -- the signing root's; see roots
) STRICT;
CREATE INDEX intermediates_cluster ON intermediates (cluster, not_after);
CREATE INDEX intermediates_not_after ON intermediates (not_after);
CREATE INDEX intermediates_root_fingerprint ON intermediates (root_fingerprint);

-- Roots the root service created. Which are in the bundle and which one
-- signs follows from added_at, activate_at and the clock, so it is not stored.
CREATE TABLE roots (
    fingerprint TEXT    NOT NULL PRIMARY KEY, -- lower-case hex SHA-256 of the DER
    certificate BLOB    NOT NULL,             -- DER
    key_ref     TEXT    NOT NULL,             -- file path or "vault:<transit key name>"
    added_at    INTEGER NOT NULL,
    activate_at INTEGER NOT NULL
) STRICT;

-- +goose Down
DROP TABLE roots;
DROP TABLE intermediates;
DROP TABLE join_tokens;
DROP TABLE clusters;
