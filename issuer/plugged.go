package issuer

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/meshca/meshca/ca"
	"github.com/meshca/meshca/trust"
)

// Defaults of PluggedCAConfig.
const (
	// DefaultPluggedMinRemaining is the life a plugged intermediate must
	// have left to be loaded: a day, the longest leaf an issuer signs by
	// default, so that the operator has a day to replace it.
	DefaultPluggedMinRemaining = 24 * time.Hour
	// DefaultPluggedPollInterval is how often the files are read again.
	DefaultPluggedPollInterval = 10 * time.Second
)

// PluggedCAConfig configures a PluggedCA.
type PluggedCAConfig struct {
	// Files locate the intermediate, its key, its chain and the roots.
	// Required.
	Files ca.PluggedFiles
	// MinRemaining is the life an intermediate must have left to be
	// loaded, at start and at every reload; zero means
	// DefaultPluggedMinRemaining.
	MinRemaining time.Duration
	// PollInterval is how often the files are read to see whether they
	// changed; zero means DefaultPluggedPollInterval.
	PollInterval time.Duration
	// Logger: nil means slog.Default().
	Logger *slog.Logger
}

// Validate reports the first problem with c; it does not change c.
func (c PluggedCAConfig) Validate() error {
	if err := c.Files.Validate(); err != nil {
		return err
	}
	if c.MinRemaining < 0 || c.PollInterval < 0 {
		return errors.New("plugged CA: negative minimum life or poll interval")
	}
	return nil
}

func (c PluggedCAConfig) withDefaults() PluggedCAConfig {
	c.MinRemaining = cmp.Or(c.MinRemaining, DefaultPluggedMinRemaining)
	c.PollInterval = cmp.Or(c.PollInterval, DefaultPluggedPollInterval)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// PluggedCA is an issuer's intermediate CA issued and kept by someone else
// (Istio's plug-in CA Secret cacerts, an operator, cert-manager): meshca
// signs leaves with it directly, holds no key above it and so never renews
// it. Run follows its files: when they change and the new set passes every
// check (ca.LoadPluggedCA, then Issuer.SetAuthority), the issuer switches
// to it; a set that fails changes nothing. The issuer must be configured
// with ExternalCA.
type PluggedCA struct {
	cfg PluggedCAConfig

	// State owned by Run (set once by NewPluggedCA before).
	loaded    *ca.PluggedCA
	loadedRaw [4][]byte
	// failedRaw is the content whose failure was logged last, so that
	// a broken set is logged once, not at every poll.
	failedRaw [4][]byte
	// shortWarned is the intermediate whose short remaining life was
	// logged.
	shortWarned *ca.Authority
}

// NewPluggedCA loads the files of cfg as they are at now and checks them
// (see ca.LoadPluggedCA).
func NewPluggedCA(cfg PluggedCAConfig, now time.Time) (*PluggedCA, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	raw, err := cfg.Files.Read()
	if err != nil {
		return nil, err
	}
	p, err := ca.LoadPluggedCA(cfg.Files, now, cfg.MinRemaining)
	if err != nil {
		return nil, err
	}
	return &PluggedCA{cfg: cfg, loaded: p, loadedRaw: raw}, nil
}

// Authority is the intermediate loaded by NewPluggedCA.
func (p *PluggedCA) Authority() *ca.Authority { return p.loaded.Authority }

// Roots is the bundle of the root file loaded by NewPluggedCA.
func (p *PluggedCA) Roots() (*trust.Bundle, error) { return trust.NewBundle(p.loaded.Roots...) }

// Run reads the files every PollInterval until ctx ends, then returns nil;
// a changed set that passes every check becomes iss's authority and
// bundle. It warns once per intermediate when less than MinRemaining of its
// life is left. Call it once, with the issuer NewPluggedCA's authority was
// given to.
func (p *PluggedCA) Run(ctx context.Context, iss *Issuer) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(p.cfg.PollInterval):
		}
		p.poll(iss, time.Now())
	}
}

// poll reloads the files if they changed since the last load.
func (p *PluggedCA) poll(iss *Issuer, now time.Time) {
	log := p.cfg.Logger
	cur := p.loaded.Authority.Certificate
	if left := cur.NotAfter.Sub(now); left < p.cfg.MinRemaining && p.shortWarned != p.loaded.Authority {
		p.shortWarned = p.loaded.Authority
		log.Error("the plugged intermediate CA expires soon and meshca cannot renew it: replace its files",
			"cert_file", p.cfg.Files.CertFile, "not_after", cur.NotAfter, "left", left.Round(time.Second).String())
	}
	raw, err := p.cfg.Files.Read()
	if err == nil && sameFiles(raw, p.loadedRaw) {
		return
	}
	if err == nil {
		err = p.switchTo(iss, raw, now)
	}
	if err == nil {
		p.failedRaw = [4][]byte{}
		return
	}
	if !sameFiles(raw, p.failedRaw) {
		p.failedRaw = raw
		log.Error("the plugged CA files changed but are not usable; still signing with the loaded intermediate",
			"error", err.Error(), "serial", trust.SerialHex(cur.SerialNumber), "not_after", cur.NotAfter)
	}
}

// switchTo loads the files (whose content raw was read just before) and
// makes them iss's authority.
func (p *PluggedCA) switchTo(iss *Issuer, raw [4][]byte, now time.Time) error {
	next, err := ca.LoadPluggedCA(p.cfg.Files, now, p.cfg.MinRemaining)
	if err != nil {
		return err
	}
	if again, err := p.cfg.Files.Read(); err != nil || !sameFiles(again, raw) {
		return errors.New("the files changed while they were loaded; retrying at the next poll")
	}
	roots, err := trust.NewBundle(next.Roots...)
	if err != nil {
		return fmt.Errorf("plugged CA: %w", err)
	}
	if err := iss.SetAuthority(next.Authority, roots); err != nil {
		return err
	}
	prev := p.loaded.Authority.Certificate
	p.loaded, p.loadedRaw = next, raw
	c := next.Authority.Certificate
	p.cfg.Logger.Info("plugged intermediate CA reloaded", "serial", trust.SerialHex(c.SerialNumber), "not_after", c.NotAfter,
		"roots", len(next.Roots), "previous_serial", trust.SerialHex(prev.SerialNumber))
	return nil
}

func sameFiles(a, b [4][]byte) bool {
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}
