-- Issuer replicas. A cluster's issuer may run as several replicas that
-- enrol with one join token: join_tokens.replicas is how many replicas of
-- the cluster may hold a live credential lineage at once through that
-- token (1: a one-time token, used up by its first enrolment; more: a join
-- secret redeemable until it expires). cluster_credentials gets one row per
-- replica (replica '' is the single issuer of a one-time token), so each
-- replica renews its own credential and a copied one is still caught.

-- +goose Up
ALTER TABLE join_tokens ADD COLUMN replicas integer NOT NULL DEFAULT 1 CHECK (replicas >= 1);
ALTER TABLE cluster_credentials ADD COLUMN replica text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE cluster_credentials DROP CONSTRAINT cluster_credentials_pkey;
ALTER TABLE cluster_credentials ADD PRIMARY KEY (cluster, replica);

-- +goose Down
-- The lineages of named replicas cannot be kept in a table of one row per
-- cluster: those replicas enrol again after a downgrade.
DELETE FROM cluster_credentials WHERE replica <> '';
ALTER TABLE cluster_credentials DROP CONSTRAINT cluster_credentials_pkey;
ALTER TABLE cluster_credentials DROP COLUMN replica;
ALTER TABLE cluster_credentials ADD PRIMARY KEY (cluster);
ALTER TABLE join_tokens DROP COLUMN replicas;
