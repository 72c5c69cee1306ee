-- Workload DNS names of a cluster: the DNS names the root lets the
-- cluster's intermediates admit in workload certificates (istiod's serving
-- names), each exactly, without its subdomains. Space-separated lower-case
-- DNS names; empty means none. Set by `meshca admin cluster add --dns-name`.

-- +goose Up
ALTER TABLE clusters ADD COLUMN dns_names TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE clusters DROP COLUMN dns_names;
