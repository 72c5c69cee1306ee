-- Revocations: the table of 00001 learns cluster revocations and lifting.
-- Times are bigint Unix seconds, UTC.

-- +goose Up
ALTER TABLE revocations DROP CONSTRAINT revocations_kind_check;
ALTER TABLE revocations ADD CONSTRAINT revocations_kind_check
    CHECK (kind IN ('serial', 'spiffe_id', 'cluster', 'intermediate'));
-- lifted_at is 0 while the entry is in force, then when it was lifted. An
-- entry revoked again once lifted gets a new row, with a new id (the
-- identity never reuses one), so id still only grows.
ALTER TABLE revocations ADD COLUMN lifted_at bigint NOT NULL DEFAULT 0;
-- The entries not lifted, in id order: what every replica reads each poll.
CREATE INDEX revocations_in_force ON revocations (id) WHERE lifted_at = 0;

-- +goose Down
-- The schema of 00001 has no way to say that an entry was lifted (dropping
-- lifted_at would put lifted entries back in force) and refuses cluster
-- revocations, so those rows go.
DROP INDEX revocations_in_force;
DELETE FROM revocations WHERE lifted_at <> 0 OR kind = 'cluster';
ALTER TABLE revocations DROP COLUMN lifted_at;
ALTER TABLE revocations DROP CONSTRAINT revocations_kind_check;
ALTER TABLE revocations ADD CONSTRAINT revocations_kind_check
    CHECK (kind IN ('serial', 'spiffe_id', 'intermediate'));
