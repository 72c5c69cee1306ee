-- The current CRL of each root, signed by the replica that holds the leader
-- lease and published by every replica. A row is only replaced by a CRL
-- with a higher number. Times are bigint Unix seconds, UTC.

-- +goose Up
CREATE TABLE root_crls (
    root_fingerprint text COLLATE "C" NOT NULL PRIMARY KEY,
    number           bigint NOT NULL CHECK (number > 0),
    der              bytea  NOT NULL,
    updated_at       bigint NOT NULL
);

-- +goose Down
DROP TABLE root_crls;
