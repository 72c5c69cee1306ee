package issuer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshca/meshca/store"
)

// RevocationLister is what a DenyList reads: the revocations in force. The
// cluster's store (store/sqlite, store/postgres) implements it.
type RevocationLister interface {
	Revocations(ctx context.Context, now time.Time) ([]store.Revocation, error)
}

// Defaults of DenyListConfig.
const (
	DefaultDenyPollInterval = time.Second
	DefaultDenyMaxStale     = 10 * time.Second
)

// DenyListConfig configures a DenyList.
type DenyListConfig struct {
	// Store lists the revocations in force; it is shared by every replica
	// of the cluster's issuer. Required.
	Store RevocationLister
	// Cluster is this issuer's cluster. Serial and SPIFFE ID revocations
	// recorded for another cluster are ignored; those recorded without a
	// cluster apply. Required.
	Cluster string
	// PollInterval is how often Run reloads the list, and so bounds how long
	// a revocation made on another replica takes to reach this one; zero
	// means 1 s.
	PollInterval time.Duration
	// MaxStale is how old the list may grow (the store unreachable) before
	// Stale reports true and the issuer stops issuing; zero means 10 s. It
	// must exceed PollInterval.
	MaxStale time.Duration
	// Now stamps each load and judges staleness in CheckRevoked; nil means
	// time.Now (polling waits on a real ticker). It must be the clock of the
	// Issuer that asks Stale: tests over real TLS move both together to
	// make the list stale without waiting.
	Now func() time.Time
	// Logger receives a line per change and per change of health; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c. It does not change c.
func (c DenyListConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Store == nil:
		return errors.New("deny-list: revocation store is required")
	case c.Cluster == "":
		return errors.New("deny-list: cluster is required")
	case c.PollInterval < 0 || c.MaxStale <= c.PollInterval:
		return fmt.Errorf("deny-list: max staleness %v must exceed the poll interval %v", c.MaxStale, c.PollInterval)
	}
	return nil
}

// DenySet is one load of the deny-list: the serial and SPIFFE ID
// revocations in force for the cluster. It is shared and must not be
// modified.
type DenySet struct {
	// Version grows by one with every load whose entries differ from the
	// previous one; 0 means never loaded.
	Version uint64
	// Serials and SPIFFEIDs are the revocations by kind, sorted by ID.
	Serials, SPIFFEIDs []store.Revocation

	ids    []int64
	byID   map[string]store.Revocation // SPIFFE ID -> revocation
	byHex  map[string]store.Revocation // lower-case serial -> revocation
	loaded time.Time
}

// DenyList is an issuer replica's in-memory copy of the revocations in
// force, reloaded from the store every PollInterval (Run) and at once after
// an admin change on this replica (Refresh). It is safe for concurrent use.
// Until the first successful load, and whenever the last one is older than
// MaxStale, it is stale, and the issuer refuses to issue (fail closed).
type DenyList struct {
	cfg DenyListConfig

	mu       sync.Mutex
	set      *DenySet
	changed  chan struct{}
	started  uint64 // loads started
	applied  uint64 // the newest load applied, by start order
	failing  bool
	reported bool // staleness logged since the last success
}

// withDefaults returns c with its zero fields replaced by their defaults.
func (c DenyListConfig) withDefaults() DenyListConfig {
	c.PollInterval = cmp.Or(c.PollInterval, DefaultDenyPollInterval)
	c.MaxStale = cmp.Or(c.MaxStale, DefaultDenyMaxStale)
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// NewDenyList returns an empty, stale deny-list; call Run (or Refresh) to
// load it.
func NewDenyList(cfg DenyListConfig) (*DenyList, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &DenyList{cfg: cfg.withDefaults(), set: &DenySet{}, changed: make(chan struct{})}, nil
}

// Run loads the list at once and then every PollInterval until ctx is
// cancelled, then returns nil. A failed load is logged and retried at the
// next tick; meanwhile the previous list stays in force until it is stale.
func (d *DenyList) Run(ctx context.Context) error {
	for {
		if err := d.Refresh(ctx); err != nil && ctx.Err() == nil {
			d.failed(err)
		}
		t := time.NewTimer(d.cfg.PollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Refresh loads the list now; the admin service calls it after each Revoke
// and Unrevoke so that this replica acts at once. One load takes at most
// MaxStale. Of concurrent loads, an older one never replaces a newer one.
func (d *DenyList) Refresh(ctx context.Context) error {
	d.mu.Lock()
	d.started++
	seq := d.started
	d.mu.Unlock()
	at := d.cfg.Now()
	ctx, cancel := context.WithTimeout(ctx, d.cfg.MaxStale)
	defer cancel()
	rs, err := d.cfg.Store.Revocations(ctx, at)
	if err != nil {
		return fmt.Errorf("deny-list: load revocations: %w", err)
	}
	d.apply(seq, at, rs)
	return nil
}

func (d *DenyList) apply(seq uint64, at time.Time, rs []store.Revocation) {
	next := &DenySet{byID: map[string]store.Revocation{}, byHex: map[string]store.Revocation{}, loaded: at}
	for _, r := range rs {
		if r.Cluster != "" && r.Cluster != d.cfg.Cluster {
			continue
		}
		switch r.Kind {
		case store.RevokeSerial:
			next.byHex[strings.ToLower(r.Value)] = r
			next.Serials = append(next.Serials, r)
		case store.RevokeSPIFFEID:
			next.byID[r.Value] = r
			next.SPIFFEIDs = append(next.SPIFFEIDs, r)
		default: // cluster and intermediate revocations are the root's
			continue
		}
		next.ids = append(next.ids, r.ID)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if seq < d.applied {
		return
	}
	d.applied = seq
	if d.failing {
		d.failing, d.reported = false, false
		d.cfg.Logger.Info("revocation deny-list loaded again", "revocations", len(next.ids))
	}
	prev := d.set
	if prev.Version != 0 && slices.Equal(prev.ids, next.ids) {
		next.Version = prev.Version
		d.set = next // fresher, same entries: no change to announce
		return
	}
	next.Version = prev.Version + 1
	d.set = next
	close(d.changed)
	d.changed = make(chan struct{})
	d.cfg.Logger.Info("revocation deny-list changed", "version", next.Version,
		"revoked_serials", len(next.Serials), "revoked_spiffe_ids", len(next.SPIFFEIDs))
}

// failed logs a failed load: a warning at the first, an error once the list
// is stale.
func (d *DenyList) failed(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	stale := d.staleLocked(d.cfg.Now())
	switch {
	case !d.failing:
		d.failing = true
		d.cfg.Logger.Warn("loading the revocation deny-list failed; keeping the previous one", "error", err.Error(),
			"stale", stale)
	case stale && !d.reported:
		d.reported = true
		d.cfg.Logger.Error("the revocation deny-list is stale; refusing to issue until it loads", "error", err.Error(),
			"loaded_at", d.set.loaded, "max_stale", d.cfg.MaxStale)
	}
}

// Current returns the newest load and a channel closed when a load with
// different entries replaces it.
func (d *DenyList) Current() (*DenySet, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.set, d.changed
}

// Revoked returns the revocation in force of spiffeID, if any.
func (d *DenyList) Revoked(spiffeID string) (store.Revocation, bool) {
	s, _ := d.Current()
	r, ok := s.byID[spiffeID]
	return r, ok
}

// RevokedSerial returns the revocation in force of a certificate serial
// (hexadecimal, any case), if any.
func (d *DenyList) RevokedSerial(serial string) (store.Revocation, bool) {
	s, _ := d.Current()
	r, ok := s.byHex[strings.ToLower(serial)]
	return r, ok
}

// Stale reports whether the list cannot be trusted at now: never loaded,
// or last loaded more than MaxStale before now.
func (d *DenyList) Stale(now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.staleLocked(now)
}

func (d *DenyList) staleLocked(now time.Time) bool {
	return d.set.loaded.IsZero() || now.Sub(d.set.loaded) > d.cfg.MaxStale
}

// LoadedAt returns when the newest load was taken; zero before the first.
func (d *DenyList) LoadedAt() time.Time {
	s, _ := d.Current()
	return s.loaded
}

// CheckRevoked implements admin.RevocationChecker for the issuer's admin
// API over mutual TLS: it fails when the serial or the SPIFFE ID is revoked
// for this cluster, and while the list is stale (fail closed).
func (d *DenyList) CheckRevoked(serial string, id spiffeid.ID) error {
	now := d.cfg.Now()
	if d.Stale(now) {
		return fmt.Errorf("deny-list stale (last loaded at %s)", d.LoadedAt().UTC().Format(time.RFC3339))
	}
	if _, ok := d.RevokedSerial(serial); ok {
		return fmt.Errorf("serial %s is revoked", serial)
	}
	if _, ok := d.Revoked(id.String()); ok {
		return fmt.Errorf("SPIFFE ID %s is revoked", id)
	}
	return nil
}
