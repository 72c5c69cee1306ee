package issuer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/internal/watch"
	"github.com/meshca/meshca/store"
	"github.com/meshca/meshca/trust"
)

// CertificateLister lists recorded certificates. The cluster's store
// implements it.
type CertificateLister interface {
	Certificates(ctx context.Context, f store.CertificateFilter) ([]store.Certificate, error)
}

// RevocationSource is the deny-list a CRLSigner follows. *DenyList
// implements it.
type RevocationSource interface {
	// Current returns the newest load (Version 0 before the first) and a
	// channel closed when its entries change.
	Current() (*DenySet, <-chan struct{})
}

// CRLPublisher hands the issuer's CRLs to the root, which republishes them
// to every cluster. *Upstream implements it.
type CRLPublisher interface {
	PublishCRLs(ctx context.Context, crls []trust.CRL) error
}

var (
	_ RevocationSource = (*DenyList)(nil)
	_ CRLPublisher     = (*Upstream)(nil)
	_ CRLSource        = (*CRLSigner)(nil)
)

// CRLSignerConfig configures a CRLSigner.
type CRLSignerConfig struct {
	// Issuer's held authorities (Issuer.Held) sign the CRLs. Required.
	Issuer *Issuer
	// DenyList says what is revoked. Required.
	DenyList RevocationSource
	// Store finds the unexpired certificates of a revoked SPIFFE ID among
	// those of Issuer's cluster. Required.
	Store CertificateLister
	// Validity is each CRL's NextUpdate - ThisUpdate; CRLs are signed again
	// at half of it, and at once when the deny-list or the intermediate
	// changes. Zero means ca.DefaultCRLValidity (24 h).
	Validity time.Duration
	// Root, when set, also signs a CRL (the same list): an issuer with its
	// own local root passes it, so that a relying party that wants a CRL
	// for every CA of a chain (Envoy) finds one for the root too. With a
	// central root, the root publishes its own. Its current CA signs, and
	// a renewal (a LocalRoot under an upstream PKI) has the new one sign
	// at once.
	Root CASource
	// Publisher, when set, receives every new set of CRLs (the root, in
	// upstream mode). Failures are retried with backoff and never block
	// signing or issuance.
	Publisher CRLPublisher
	// Jitter returns values in [0, 1) that spread retries; nil means
	// math/rand/v2's Float64.
	Jitter func() float64
	// MinBackoff and MaxBackoff bound the retry delay of a failed store
	// read or publication; zero means 1 s and 1 min.
	MinBackoff, MaxBackoff time.Duration
	// AttemptTimeout bounds one store read or publication; zero means 30 s.
	AttemptTimeout time.Duration
	// Logger receives a line per signing and per failure; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c. It does not change c.
func (c CRLSignerConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Issuer == nil:
		return errors.New("crl signer: issuer is required")
	case c.DenyList == nil:
		return errors.New("crl signer: deny-list is required")
	case c.Store == nil:
		return errors.New("crl signer: certificate store is required")
	case c.Validity < 0 || c.MinBackoff <= 0 || c.MinBackoff > c.MaxBackoff || c.AttemptTimeout < 0:
		return errors.New("crl signer: invalid validity, backoff or timeout")
	}
	return nil
}

// withDefaults returns c with its zero fields replaced by their defaults.
func (c CRLSignerConfig) withDefaults() CRLSignerConfig {
	c.Validity = cmp.Or(c.Validity, ca.DefaultCRLValidity)
	if c.Jitter == nil {
		c.Jitter = rand.Float64
	}
	c.MinBackoff = cmp.Or(c.MinBackoff, time.Second)
	c.MaxBackoff = cmp.Or(c.MaxBackoff, time.Minute)
	c.AttemptTimeout = cmp.Or(c.AttemptTimeout, 30*time.Second)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// newRetry returns the pacing, after failures, of a loop run with c.
func (c CRLSignerConfig) newRetry() retry {
	return retry{jitter: c.Jitter, minDelay: c.MinBackoff, maxDelay: c.MaxBackoff, logger: c.Logger}
}

// CRLSigner keeps one current CRL per authority the issuer holds (the
// current intermediate and previous ones until they expire), each listing
// the revoked serials of the cluster and the serials of the unexpired
// certificates of its revoked SPIFFE IDs (once a SPIFFE ID revocation is
// lifted, the store keeps the certificates it covered as revoked serials).
// The serials are not split by issuing intermediate (the store does not
// record it): every CRL lists all of them, which is harmless, as a CRL only
// speaks for its own issuer.
type CRLSigner struct {
	cfg CRLSignerConfig

	// State owned by the Run goroutine.
	signed map[*ca.Authority]signedCRL
	// noCRLSign are the held authorities that may not sign CRLs, logged.
	noCRLSign map[*ca.Authority]bool

	current watch.Value[crlSet]
}

// crlSet is the CRLs published, numbered by change.
type crlSet struct {
	crls []trust.CRL
	gen  uint64 // grows with every change
}

type signedCRL struct {
	crl      trust.CRL
	number   *big.Int
	version  uint64 // of the deny-list it lists
	resignAt time.Time
}

// NewCRLSigner returns a signer; call Run to start it. Current is empty
// until the deny-list has loaded once.
func NewCRLSigner(cfg CRLSignerConfig) (*CRLSigner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &CRLSigner{cfg: cfg.withDefaults(), signed: map[*ca.Authority]signedCRL{}, noCRLSign: map[*ca.Authority]bool{}}, nil
}

// Current returns the CRLs of the held authorities, the current one's
// first, and a channel closed when they change.
func (s *CRLSigner) Current() ([]trust.CRL, <-chan struct{}) {
	crls, changed, _ := s.snapshot()
	return crls, changed
}

func (s *CRLSigner) snapshot() ([]trust.CRL, <-chan struct{}, uint64) {
	set, changed := s.current.Load()
	return set.crls, changed, set.gen
}

// Run signs until ctx is cancelled, then returns nil: once the deny-list
// has loaded, whenever it changes, whenever the issuer's intermediate
// changes, at half of each CRL's validity, and when a held authority
// expires (its CRL is dropped). A failed store read keeps the current CRLs
// and is retried with backoff. With a Publisher it publishes every new set
// meanwhile. Call it once.
func (s *CRLSigner) Run(ctx context.Context) error {
	if s.cfg.Publisher != nil {
		published := make(chan struct{})
		go func() { defer close(published); s.publish(ctx) }()
		defer func() { <-published }()
	}
	rt := s.cfg.newRetry()
	for {
		set, denyChanged := s.cfg.DenyList.Current()
		authChanged := s.cfg.Issuer.authorityChanged()
		var rootChanged <-chan struct{}
		if s.cfg.Root != nil {
			rootChanged = s.cfg.Root.Changed()
		}
		now := time.Now()
		var wake <-chan time.Time
		if set.Version != 0 {
			next, err := s.refresh(ctx, set, now)
			switch {
			case ctx.Err() != nil:
				return nil
			case err != nil:
				wake = rt.failed(ctx, slog.LevelWarn, "signing CRLs failed; keeping the current ones", err)
			default:
				wake = rt.succeeded(now, next)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-denyChanged:
		case <-authChanged:
		case <-rootChanged:
		case <-wake:
		}
	}
}

// refresh signs what is due at now and returns when to look again.
func (s *CRLSigner) refresh(ctx context.Context, set *DenySet, now time.Time) (time.Time, error) {
	held := s.cfg.Issuer.Held(now)
	if s.cfg.Root != nil {
		if r := s.cfg.Root.CA(); !now.Before(r.Certificate.NotBefore) && now.Before(r.Certificate.NotAfter) {
			held = append(held, r)
		}
	}
	held = s.maySignCRLs(held)
	var due []*ca.Authority
	for _, a := range held {
		if sc, ok := s.signed[a]; !ok || sc.version != set.Version || !now.Before(sc.resignAt) {
			due = append(due, a)
		}
	}
	dropped := false
	for a := range s.signed {
		if !slices.Contains(held, a) {
			delete(s.signed, a)
			dropped = true
		}
	}
	if len(due) > 0 {
		serials, err := s.serials(ctx, set, now)
		if err != nil {
			return time.Time{}, err
		}
		for _, a := range due {
			if err := s.sign(a, set.Version, serials, now); err != nil {
				// Only an authority that cannot sign at now (it expired
				// meanwhile) gets here; its CRL goes.
				s.cfg.Logger.Error("signing a CRL failed", "error", err.Error(),
					"issuer_serial", trust.SerialHex(a.Certificate.SerialNumber))
				delete(s.signed, a)
			}
		}
	}
	if len(due) > 0 || dropped {
		s.setCurrent(held)
	}
	var next time.Time
	for _, a := range held {
		// The current intermediate stays held once expired (until
		// replaced): its end is no reason to wake again.
		if now.Before(a.Certificate.NotAfter) {
			next = earliest(next, a.Certificate.NotAfter)
		}
		if sc, ok := s.signed[a]; ok {
			next = earliest(next, sc.resignAt)
		}
	}
	return next, nil
}

// maySignCRLs returns the authorities of held whose key usage allows CRL
// signing. The others (istiod's self-signed root and the intermediates of
// Istio's tools lack it) sign none, which is logged once per authority:
// their revocations are enforced by the issuer's deny-list alone.
func (s *CRLSigner) maySignCRLs(held []*ca.Authority) []*ca.Authority {
	out := held[:0:0]
	for _, a := range held {
		if ca.MaySignCRLs(a.Certificate) {
			out = append(out, a)
			continue
		}
		if !s.noCRLSign[a] {
			s.noCRLSign[a] = true
			s.cfg.Logger.Warn("this CA's key usage does not allow signing CRLs; it publishes none",
				"subject", a.Certificate.Subject.String(), "issuer_serial", trust.SerialHex(a.Certificate.SerialNumber))
		}
	}
	return out
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

func (s *CRLSigner) sign(a *ca.Authority, version uint64, serials []*big.Int, now time.Time) error {
	number := big.NewInt(now.UnixMilli())
	if prev, ok := s.signed[a]; ok && number.Cmp(prev.number) <= 0 {
		number = new(big.Int).Add(prev.number, big.NewInt(1))
	}
	crl, _, err := a.SignCRL(ca.CRLRequest{Number: number, Serials: serials, Now: now, Validity: s.cfg.Validity})
	if err != nil {
		return err
	}
	s.signed[a] = signedCRL{crl: crl, number: number, version: version, resignAt: now.Add(s.cfg.Validity / 2)}
	s.cfg.Logger.Info("CRL signed", "issuer_serial", trust.SerialHex(a.Certificate.SerialNumber),
		"crl_number", number.String(), "revoked_serials", len(serials), "deny_list_version", version)
	return nil
}

// serials returns the serials every CRL lists under set at now, sorted.
func (s *CRLSigner) serials(ctx context.Context, set *DenySet, now time.Time) ([]*big.Int, error) {
	seen := map[string]bool{}
	var out []*big.Int
	add := func(hex, why string) {
		if seen[hex] {
			return
		}
		seen[hex] = true
		n, ok := new(big.Int).SetString(hex, 16)
		if !ok || n.Sign() <= 0 {
			s.cfg.Logger.Warn("skipping a revoked serial that is not hexadecimal", "serial", hex, "source", why)
			return
		}
		out = append(out, n)
	}
	for _, r := range set.Serials {
		add(r.Value, store.RevokeSerial)
	}
	cluster := s.cfg.Issuer.cfg.Cluster
	for _, r := range set.SPIFFEIDs {
		actx, cancel := context.WithTimeout(ctx, s.cfg.AttemptTimeout)
		certs, err := s.cfg.Store.Certificates(actx, store.CertificateFilter{SPIFFEID: r.Value, Cluster: cluster, ActiveAt: now})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("list certificates of revoked %s: %w", r.Value, err)
		}
		for _, c := range certs {
			add(c.Serial, store.RevokeSPIFFEID)
		}
	}
	slices.SortFunc(out, (*big.Int).Cmp)
	return out, nil
}

// setCurrent publishes the CRLs of held, in held's order.
func (s *CRLSigner) setCurrent(held []*ca.Authority) {
	var crls []trust.CRL
	for _, a := range held {
		if sc, ok := s.signed[a]; ok {
			crls = append(crls, sc.crl)
		}
	}
	s.current.Update(func(old crlSet) (crlSet, bool) { return crlSet{crls: crls, gen: old.gen + 1}, true })
}

// publish hands every new set of CRLs to the Publisher until ctx is
// cancelled (see relay).
func (s *CRLSigner) publish(ctx context.Context) {
	type crlGen struct {
		crls []trust.CRL
		gen  uint64
	}
	relay[crlGen]{
		what: "CRLs", countKey: "crls",
		current: func() (crlGen, <-chan struct{}) {
			crls, changed, gen := s.snapshot()
			return crlGen{crls, gen}, changed
		},
		size:           func(v crlGen) int { return len(v.crls) },
		same:           func(a, b crlGen) bool { return a.gen == b.gen },
		send:           func(ctx context.Context, v crlGen) error { return s.cfg.Publisher.PublishCRLs(ctx, v.crls) },
		retry:          s.cfg.newRetry(),
		attemptTimeout: s.cfg.AttemptTimeout,
	}.run(ctx)
}
