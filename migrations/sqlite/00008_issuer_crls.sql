-- The newest CRL each issuer (intermediate) published to the root. Every
-- root replica stores what it accepts and merges what the others stored,
-- so all of them relay every issuer's CRLs, whichever replica the issuer's
-- connection reached, and a restarted root has them at once. A row is only
-- replaced by a CRL with a higher number, and dropped once its issuer has
-- expired. Times are integer Unix seconds, UTC.

-- +goose Up
CREATE TABLE issuer_crls (
    issuer_serial    TEXT    NOT NULL PRIMARY KEY, -- lower-case hex serial of the intermediate that signed it
    cluster          TEXT    NOT NULL,
    number           INTEGER NOT NULL CHECK (number > 0),
    der              BLOB    NOT NULL,
    issuer_chain     BLOB    NOT NULL,             -- DER certificates, concatenated, the intermediate first
    issuer_not_after INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) STRICT;

-- +goose Down
DROP TABLE issuer_crls;
