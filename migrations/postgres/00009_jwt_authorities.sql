-- The JWT-SVID verification keys issuers handed to the root with their
-- CRLs, each with the certificate chain that authenticates it. Every root
-- replica stores what it accepts and merges what the others stored, so all
-- of them publish every issuer's keys, whichever replica the issuer's
-- connection reached. A key stays until it expires, also after its issuer
-- stops naming it: JWT-SVIDs it signed may still be in use. expires_at only
-- ever moves later. Times are integer Unix seconds, UTC.

-- +goose Up
CREATE TABLE jwt_authorities (
    key_id       text COLLATE "C" NOT NULL PRIMARY KEY, -- the JWT "kid": unpadded base64url SHA-256 of public_key
    cluster      text COLLATE "C" NOT NULL,
    trust_domain text COLLATE "C" NOT NULL,
    public_key   bytea  NOT NULL,                       -- PKIX DER
    chain        bytea  NOT NULL,                       -- DER certificates, concatenated, the key's certificate first
    expires_at   bigint NOT NULL,
    updated_at   bigint NOT NULL
);

-- +goose Down
DROP TABLE jwt_authorities;
