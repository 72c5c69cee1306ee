package issuer

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/meshca/meshca/internal/watch"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
)

// DefaultSharedCRLPollInterval is how often SharedCRLs reads the other
// replicas' CRLs when SharedCRLsConfig.PollInterval is zero.
const DefaultSharedCRLPollInterval = DefaultDenyPollInterval

// SharedCRLsConfig configures a SharedCRLs.
type SharedCRLsConfig struct {
	// Own supplies this replica's CRLs (a *CRLSigner). Required.
	Own CRLSource
	// Store is shared by the replicas. Required.
	Store store.IssuerCRLStore
	// Root is the local root every replica's intermediates chain to (its
	// current CA, asked at every read: a LocalRoot renewed under an
	// upstream PKI); a stored CRL whose issuer does not is never served.
	// Required.
	Root CASource
	// Cluster names the rows this replica writes and reads. Required.
	Cluster string
	// PollInterval is how often the stored CRLs are read; zero means
	// DefaultSharedCRLPollInterval. They are read at once too whenever Own
	// changes (a revocation).
	PollInterval time.Duration
	// AttemptTimeout bounds one store call; zero means 30 s.
	AttemptTimeout time.Duration
	// Logger receives failures and ignored rows; nil means slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c. It does not change c.
func (c SharedCRLsConfig) Validate() error {
	switch {
	case c.Own == nil || c.Store == nil:
		return errors.New("shared CRLs: own CRLs and store are required")
	case c.Root == nil || c.Root.CA() == nil || !c.Root.CA().Certificate.IsCA:
		return errors.New("shared CRLs: a CA root is required")
	case c.Cluster == "":
		return errors.New("shared CRLs: cluster is required")
	case c.PollInterval < 0 || c.AttemptTimeout < 0:
		return errors.New("shared CRLs: negative poll interval or timeout")
	}
	return nil
}

// SharedCRLs is the CRLSource of a replica of a standalone issuer (several
// replicas on one store and one local root, each with intermediates of
// its own): it stores the CRLs of this replica's intermediates and serves
// them together with every other replica's stored CRLs, each verified
// against the root first, so that an agent connected to any replica gets
// the CRL of the intermediate that signed a revoked certificate.
type SharedCRLs struct {
	cfg SharedCRLsConfig

	// State owned by the Run goroutine: the verified stored CRLs, and the
	// rows refused (logged once each).
	others  []trust.CRL
	refused map[string]bool

	current watch.Value[crlSet]
}

var _ CRLSource = (*SharedCRLs)(nil)

// NewSharedCRLs returns a SharedCRLs; call Run to start it. Until then
// Current returns nothing.
func NewSharedCRLs(cfg SharedCRLsConfig) (*SharedCRLs, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.PollInterval = cmp.Or(cfg.PollInterval, DefaultSharedCRLPollInterval)
	cfg.AttemptTimeout = cmp.Or(cfg.AttemptTimeout, 30*time.Second)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	return &SharedCRLs{cfg: cfg, refused: map[string]bool{}}, nil
}

// Current returns this replica's CRLs and the verified stored ones, the
// newest per issuer, and a channel closed when they change.
func (s *SharedCRLs) Current() ([]trust.CRL, <-chan struct{}) {
	set, changed := s.current.Load()
	return set.crls, changed
}

// Run stores this replica's CRLs whenever they change and merges the
// stored ones at every change and every PollInterval, until ctx is
// cancelled; then it returns nil. A failed store call keeps what is served
// and is tried again at the next poll. Call it once.
func (s *SharedCRLs) Run(ctx context.Context) error {
	return runShared(ctx, s.cfg.PollInterval, s.cfg.Own.Current, s.put, s.merge)
}

// put stores the CRLs of own that an intermediate signed (each replica
// signs the root's CRL itself); it reports whether all were stored.
func (s *SharedCRLs) put(ctx context.Context, own []trust.CRL) bool {
	ok := true
	for _, c := range own {
		if len(c.IssuerChain) == 0 {
			continue
		}
		row, err := s.row(c)
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, s.cfg.AttemptTimeout)
			err = s.cfg.Store.PutIssuerCRL(actx, row)
			cancel()
		}
		if err != nil && !errors.Is(err, store.ErrAlreadyExists) {
			if ctx.Err() == nil {
				s.cfg.Logger.Warn("cannot store a CRL for the other replicas; retrying at the next poll", "error", err.Error())
			}
			ok = false
		}
	}
	return ok
}

// row is the store row of c, a CRL signed by an intermediate.
func (s *SharedCRLs) row(c trust.CRL) (store.IssuerCRL, error) {
	rl, err := x509.ParseRevocationList(c.DER)
	if err != nil {
		return store.IssuerCRL{}, err
	}
	inter, err := x509.ParseCertificate(c.IssuerChain[0])
	if err != nil {
		return store.IssuerCRL{}, err
	}
	if rl.Number == nil || !rl.Number.IsInt64() {
		return store.IssuerCRL{}, errors.New("CRL number does not fit the store")
	}
	return store.IssuerCRL{
		IssuerSerial: trust.SerialHex(inter.SerialNumber), Cluster: s.cfg.Cluster, Number: rl.Number.Int64(),
		DER: c.DER, IssuerChain: c.IssuerChain, IssuerNotAfter: inter.NotAfter.UTC().Truncate(time.Second),
	}, nil
}

// merge serves own with the stored CRLs of the cluster that verify under
// the root at now. A failed read keeps the stored CRLs served before.
func (s *SharedCRLs) merge(ctx context.Context, own []trust.CRL, now time.Time) {
	actx, cancel := context.WithTimeout(ctx, s.cfg.AttemptTimeout)
	rows, err := s.cfg.Store.IssuerCRLs(actx, now)
	cancel()
	switch {
	case err != nil && ctx.Err() == nil:
		s.cfg.Logger.Warn("cannot read the other replicas' CRLs; serving those read before", "error", err.Error())
	case err == nil:
		s.others = s.verified(rows, now)
	}
	crls := mergeCRLs(own, s.others)
	s.current.Update(func(old crlSet) (crlSet, bool) {
		if slices.EqualFunc(old.crls, crls, func(a, b trust.CRL) bool { return bytes.Equal(a.DER, b.DER) }) {
			return old, false
		}
		return crlSet{crls: crls, gen: old.gen + 1}, true
	})
}

// verified returns the CRLs of the cluster's rows that an intermediate of
// the root signed and that are current at now. A row refused is logged
// once per issuer and number.
func (s *SharedCRLs) verified(rows []store.IssuerCRL, now time.Time) []trust.CRL {
	var out []trust.CRL
	roots, rootErr := trust.NewBundle(s.cfg.Root.CA().Certificate)
	for _, r := range rows {
		if r.Cluster != s.cfg.Cluster {
			continue
		}
		c := trust.CRL{DER: r.DER, IssuerChain: r.IssuerChain}
		err := rootErr
		if err == nil {
			_, _, err = trust.VerifyCRL(c, roots, now)
		}
		if err == nil && len(c.IssuerChain) > 0 {
			out = append(out, c)
			continue
		}
		key := fmt.Sprintf("%s/%d", r.IssuerSerial, r.Number)
		if !s.refused[key] {
			s.refused[key] = true
			s.cfg.Logger.Warn("not serving a stored CRL that no intermediate of the root signed, or that is not current",
				"issuer_serial", r.IssuerSerial, "crl_number", r.Number, "error", fmt.Sprint(err))
		}
	}
	return out
}
