-- The current CRL of each root, signed by the replica that holds the leader
-- lease and published by every replica. A row is only replaced by a CRL
-- with a higher number. Times are integer Unix seconds, UTC.

-- +goose Up
CREATE TABLE root_crls (
    root_fingerprint TEXT    NOT NULL PRIMARY KEY,
    number           INTEGER NOT NULL CHECK (number > 0),
    der              BLOB    NOT NULL,
    updated_at       INTEGER NOT NULL
) STRICT;

-- +goose Down
DROP TABLE root_crls;
