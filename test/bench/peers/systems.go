package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// What each system does per request, for the report. Kept beside the code
// that starts the systems so the two stay in step.
const (
	doesMeshca = "TLS 1.3 + gRPC (HTTP/2); dev-token JWT attestation, result cached per token; CSR checks; " +
		"sign; chain-verify the leaf; certificate + hash-chained audit event committed to SQLite " +
		"(WAL, synchronous=FULL: fsync per group commit) before the reply"
	doesMeshcaFresh = "as meshca-sqlite, but a new token every request: ES256 signature and claims checked each time"
	doesMeshcaPG    = "as meshca-sqlite, committed to PostgreSQL (synchronous_commit=on: WAL flush per group commit); " +
		"CPU includes the PostgreSQL backends"
	doesStep = "TLS + HTTP/1.1 JSON; JWK one-time token (ES256 verify, claims); CSR checks; sign; " +
		"two Badger transactions (the token's jti, to refuse reuse; the certificate and its provisioner), " +
		"SyncWrites on (fsync per write batch); a log line per request, the certificate in it"
	doesSpire = "no TLS, no caller authentication (local admin Unix socket; its Rego authorization policy is " +
		"evaluated per call); CSR checks; sign; validate the SVID; " +
		"nothing persisted for minted SVIDs; no log line at the default level"
)

// startSystems starts the systems cfg names, each in its own directory
// under dir, with cfg.clients connections each. cleanup stops what was
// started, also after an error.
func startSystems(ctx context.Context, cfg config, dir string, ws []workload) (systems []*system, cleanup func(), err error) {
	var stops []func()
	cleanup = func() {
		for _, stop := range slices.Backward(stops) {
			stop()
		}
	}
	want := func(name string) bool { return slices.Contains(cfg.systems, name) }
	sub := func(name string) (string, error) {
		d := filepath.Join(dir, name)
		return d, os.Mkdir(d, 0o700)
	}
	if want("meshca-sqlite") || want("meshca-fresh") {
		d, err := sub("meshca-sqlite")
		if err != nil {
			return nil, cleanup, err
		}
		m, err := startMeshca("meshca-sqlite", cfg.meshcaBin, d, "")
		if err != nil {
			return nil, cleanup, err
		}
		stops = append(stops, m.close)
		pids := func(context.Context) ([]int, error) { return []int{m.pid()}, nil }
		for _, fresh := range []bool{false, true} {
			name, does := "meshca-sqlite", doesMeshca
			if fresh {
				name, does = "meshca-fresh", doesMeshcaFresh
			}
			if !want(name) {
				continue
			}
			clients, err := m.clients(ws, fresh)
			if err != nil {
				return nil, cleanup, fmt.Errorf("%s: %w", name, err)
			}
			systems = append(systems, &system{name: name, does: does, clients: clients, pids: pids})
		}
	}
	if want("meshca-pg") {
		s, stop, err := startMeshcaPG(ctx, cfg, ws, sub)
		stops = append(stops, stop)
		if err != nil {
			return nil, cleanup, err
		}
		systems = append(systems, s)
	}
	if want("step-ca") {
		d, err := sub("step-ca")
		if err != nil {
			return nil, cleanup, err
		}
		st, err := startStepCA(cfg.stepBin, d)
		if err != nil {
			return nil, cleanup, err
		}
		stops = append(stops, st.close)
		systems = append(systems, &system{name: "step-ca", does: doesStep, clients: st.clients(ws),
			pids: func(context.Context) ([]int, error) { return []int{st.pid()}, nil }})
	}
	if want("spire") {
		d, err := sub("spire")
		if err != nil {
			return nil, cleanup, err
		}
		sp, err := startSpire(cfg.spireBin, d)
		if err != nil {
			return nil, cleanup, err
		}
		stops = append(stops, sp.close)
		clients, err := sp.clients(ws)
		if err != nil {
			return nil, cleanup, err
		}
		systems = append(systems, &system{name: "spire", does: doesSpire, clients: clients,
			pids: func(context.Context) ([]int, error) { return []int{sp.pid()}, nil }})
	}
	return systems, cleanup, nil
}

// startMeshcaPG creates a database, runs `meshca dev` on it and returns
// the system; its server CPU is meshca's plus that of the PostgreSQL
// backends connected to the database. stop stops meshca and drops the
// database; it is never nil.
func startMeshcaPG(ctx context.Context, cfg config, ws []workload, sub func(string) (string, error)) (*system, func(), error) {
	stop := func() {}
	d, err := sub("meshca-pg")
	if err != nil {
		return nil, stop, err
	}
	db, err := newPGDatabase(ctx, cfg.postgresDSN)
	if err != nil {
		return nil, stop, err
	}
	stop = func() {
		if err := db.drop(context.Background()); err != nil {
			fmt.Fprintf(os.Stderr, "drop database %s: %v\n", db.name, err)
		}
	}
	m, err := startMeshca("meshca-pg", cfg.meshcaBin, d, db.dsn)
	if err != nil {
		return nil, stop, err
	}
	dropDB := stop
	stop = func() { m.close(); dropDB() }
	clients, err := m.clients(ws, false)
	if err != nil {
		return nil, stop, err
	}
	pids := func(ctx context.Context) ([]int, error) {
		backends, err := db.backendPIDs(ctx)
		return append(backends, m.pid()), err
	}
	return &system{name: "meshca-pg", does: doesMeshcaPG, clients: clients, pids: pids}, stop, nil
}
