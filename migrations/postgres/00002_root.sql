-- Root service: one-time join tokens for enrolling clusters, the roots
-- themselves, and which root signed each cluster intermediate. Times are
-- bigint Unix seconds, UTC; text that is looked up or sorted is COLLATE "C".

-- +goose Up
-- Only the token's hash is stored (lower-case hex SHA-256). used_at is 0
-- until the token is redeemed, then when it was; a token is redeemed once.
CREATE TABLE join_tokens (
    hash       text COLLATE "C" NOT NULL PRIMARY KEY,
    cluster    text COLLATE "C" NOT NULL REFERENCES clusters (name) ON DELETE CASCADE,
    expires_at bigint NOT NULL,
    used_at    bigint NOT NULL DEFAULT 0,
    created_at bigint NOT NULL
);
CREATE INDEX join_tokens_cluster ON join_tokens (cluster);

-- Roots the root service created. Which are in the bundle and which one
-- signs follows from added_at, activate_at and the clock, so it is not stored.
CREATE TABLE roots (
    fingerprint text COLLATE "C" NOT NULL PRIMARY KEY, -- lower-case hex SHA-256 of the DER
    certificate bytea  NOT NULL,                       -- DER
    key_ref     text   NOT NULL,                       -- file path or "vault:<transit key name>"
    added_at    bigint NOT NULL,
    activate_at bigint NOT NULL
);

-- The lower-case hex SHA-256 of the root that signed the intermediate; ''
-- for intermediates recorded before roots were.
ALTER TABLE intermediates ADD COLUMN root_fingerprint text COLLATE "C" NOT NULL DEFAULT '';
CREATE INDEX intermediates_root_fingerprint ON intermediates (root_fingerprint);

-- +goose Down
DROP INDEX intermediates_root_fingerprint;
ALTER TABLE intermediates DROP COLUMN root_fingerprint;
DROP TABLE roots;
DROP TABLE join_tokens;
