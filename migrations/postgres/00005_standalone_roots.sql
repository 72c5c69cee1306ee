-- The root each standalone issuer (one whose root key is in files) serves
-- under, recorded by the first replica that starts on the store, so that a
-- replica with another root refuses to start instead of issuing
-- certificates the others' bundles reject. A row is never updated.
-- Times are bigint Unix seconds, UTC.

-- +goose Up
CREATE TABLE standalone_roots (
    trust_domain text COLLATE "C" NOT NULL,
    cluster      text COLLATE "C" NOT NULL,
    fingerprint  text COLLATE "C" NOT NULL, -- lower-case hex SHA-256 of the root's DER
    created_at   bigint NOT NULL,
    PRIMARY KEY (trust_domain, cluster)
);

-- +goose Down
DROP TABLE standalone_roots;
