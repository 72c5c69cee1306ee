package multicluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	meshcav1 "github.com/meshca/meshca/api/meshca/v1"
	"github.com/meshca/meshca/trust"
)

// bundleObserver polls GetBundle on every live root replica in turn, every
// replicaPoll, and checks what it sees as an agent moving between the
// replicas would: each bundle is signed by a root seen before, each
// replica's sequence only rises (and rises when the content changes), and
// per root the CRL number never goes back — not on one replica, and not
// across replicas beyond replicaFollowerLag — and one number always comes
// with one CRL.
type bundleObserver struct {
	mu       sync.Mutex
	replicas map[string]string // live replicas: name → address
	roots    []*x509.Certificate
	latest   map[string]*trust.TrustBundle
	crls     map[string]*rootCRLSeen // by root fingerprint
	polls    map[string]int
	failed   map[string]int
	errs     []string
	// lag is the longest a replica was seen publishing a root CRL
	// numbered below one already published (within replicaFollowerLag).
	lag  time.Duration
	quit chan struct{}
	done chan struct{}
}

// rootCRLSeen is what the observer saw of one root's CRLs.
type rootCRLSeen struct {
	max     *big.Int
	maxAt   time.Time
	byNum   map[string][]byte
	replica map[string]*big.Int
	history []string
}

func observeBundles(t *testing.T, replicas ...*rootProc) *bundleObserver {
	t.Helper()
	pem, err := os.ReadFile(replicas[0].BundlePath())
	if err != nil {
		t.Fatal(err)
	}
	initial, err := trust.ParseBundle(pem)
	if err != nil {
		t.Fatal(err)
	}
	o := &bundleObserver{replicas: map[string]string{}, roots: initial.Roots(), latest: map[string]*trust.TrustBundle{},
		crls: map[string]*rootCRLSeen{}, polls: map[string]int{}, failed: map[string]int{},
		quit: make(chan struct{}), done: make(chan struct{})}
	for _, r := range replicas {
		o.replicas[r.name] = r.Addr
	}
	go o.run()
	t.Cleanup(o.stop)
	return o
}

func (o *bundleObserver) run() {
	defer close(o.done)
	for {
		o.mu.Lock()
		names := slices.Sorted(func(yield func(string) bool) {
			for n := range o.replicas {
				if !yield(n) {
					return
				}
			}
		})
		o.mu.Unlock()
		for _, name := range names {
			o.poll(name)
		}
		select {
		case <-o.quit:
			return
		case <-time.After(replicaPoll):
		}
	}
}

func (o *bundleObserver) stop() {
	select {
	case <-o.quit:
	default:
		close(o.quit)
	}
	<-o.done
}

// add polls r (again).
func (o *bundleObserver) add(r *rootProc) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.replicas[r.name] = r.Addr
}

// drop stops polling the replica name.
func (o *bundleObserver) drop(name string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.replicas, name)
	delete(o.latest, name)
}

func (o *bundleObserver) poll(name string) {
	o.mu.Lock()
	addr, live := o.replicas[name]
	pool := x509.NewCertPool()
	for _, r := range o.roots {
		pool.AddCert(r)
	}
	o.mu.Unlock()
	if !live {
		return
	}
	b, err := getBundle(addr, pool)
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, live := o.replicas[name]; !live {
		return
	}
	o.polls[name]++
	if err != nil {
		o.failed[name]++
		return
	}
	trusted, err := trust.NewBundle(o.roots...)
	if err == nil {
		err = b.VerifySignature(trusted, now)
	}
	if err != nil {
		o.errorf("%s: bundle %d: signature: %v", name, b.Sequence, err)
	}
	if prev := o.latest[name]; prev != nil {
		switch {
		case b.Sequence < prev.Sequence:
			o.errorf("%s: bundle sequence went back from %d to %d", name, prev.Sequence, b.Sequence)
		case b.Sequence == prev.Sequence && !b.Equal(prev):
			o.errorf("%s: bundle %d changed without a new sequence", name, b.Sequence)
		}
	}
	o.latest[name] = b
	if own := b.OwnRoots(); own != nil {
		for _, r := range own.Roots() {
			if !slices.ContainsFunc(o.roots, r.Equal) {
				o.roots = append(o.roots, r)
			}
		}
	}
	for fp, rl := range rootCRLsOf(b) {
		o.sawRootCRL(name, fp, rl, now)
	}
}

// sawRootCRL checks one root CRL that replica name published at now.
func (o *bundleObserver) sawRootCRL(name, fp string, rl *x509.RevocationList, now time.Time) {
	s := o.crls[fp]
	if s == nil {
		s = &rootCRLSeen{max: new(big.Int), byNum: map[string][]byte{}, replica: map[string]*big.Int{}}
		o.crls[fp] = s
	}
	n := rl.Number
	if der, ok := s.byNum[n.String()]; ok && !bytes.Equal(der, rl.Raw) {
		o.errorf("%s: root %s: another CRL under number %s", name, fp[:12], n)
	}
	s.byNum[n.String()] = rl.Raw
	if prev := s.replica[name]; prev != nil && n.Cmp(prev) < 0 {
		o.errorf("%s: root %s: CRL number went back from %s to %s", name, fp[:12], prev, n)
	}
	s.replica[name] = n
	switch c := n.Cmp(s.max); {
	case c > 0:
		s.max, s.maxAt = n, now
		s.history = append(s.history, fmt.Sprintf("%s (%s)", n, name))
	case c < 0 && now.Sub(s.maxAt) > replicaFollowerLag:
		o.errorf("%s: root %s: CRL number %s, %v after %s was published", name, fp[:12], n, now.Sub(s.maxAt).Round(time.Millisecond), s.max)
	case c < 0:
		o.lag = max(o.lag, now.Sub(s.maxAt))
	}
}

func (o *bundleObserver) errorf(format string, args ...any) {
	if len(o.errs) < 20 {
		o.errs = append(o.errs, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
	}
}

// listsEverywhere reports whether every root CRL that replica name
// publishes lists serial (hex), and it publishes at least one.
func (o *bundleObserver) listsEverywhere(name, serial string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	b := o.latest[name]
	if b == nil {
		return false
	}
	want, _ := new(big.Int).SetString(serial, 16)
	crls := rootCRLsOf(b)
	for _, rl := range crls {
		if !slices.ContainsFunc(rl.RevokedCertificateEntries, func(e x509.RevocationListEntry) bool { return e.SerialNumber.Cmp(want) == 0 }) {
			return false
		}
	}
	return len(crls) > 0
}

// converge waits until every live replica serves the same content: trust
// domains, roots, active root, root CRLs and the CRLs issuers published to
// either replica (sequences and signatures are each replica's own), and
// fails the test with the difference when they do not within two ticks and
// two polls: issuer CRLs reach the other replicas through the store at
// their next re-evaluation.
func (o *bundleObserver) converge(t *testing.T, when string) {
	t.Helper()
	deadline := time.Now().Add(2*time.Second + 2*replicaPoll + time.Second)
	for {
		diff, issuerDiff, seqs := o.difference()
		if diff == "" && issuerDiff == "" {
			t.Logf("%s: the replicas serve the same roots, root CRLs and issuer CRLs; bundle sequences %s", when, seqs)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the replicas serve different bundles: %s%s", when, diff, issuerDiff)
		}
		time.Sleep(replicaPoll)
	}
}

// difference describes how the root content of the latest bundles of the
// live replicas differs (empty when it is the same), and how their issuer
// CRLs differ, and names their sequences.
func (o *bundleObserver) difference() (roots, issuerCRLs, seqs string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var names []string
	for name := range o.replicas {
		if o.latest[name] == nil {
			return name + " has served no bundle yet", "", ""
		}
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		seqs += fmt.Sprintf("%s %d ", name, o.latest[name].Sequence)
	}
	for _, other := range names[1:] {
		x, y := o.latest[names[0]], o.latest[other]
		describe := func() string {
			return fmt.Sprintf("%s (sequence %d) %s, %s (sequence %d) %s", names[0], x.Sequence, describeBundle(x), other, y.Sequence, describeBundle(y))
		}
		if !rootContent(x).Equal(rootContent(y)) {
			return describe(), "", ""
		}
		if !x.Equal(y) {
			issuerCRLs = describe()
		}
	}
	return "", issuerCRLs, strings.TrimSpace(seqs)
}

// rootContent is b without its issuer CRLs.
func rootContent(b *trust.TrustBundle) *trust.TrustBundle {
	out := *b
	out.Domains = slices.Clone(b.Domains)
	for i, d := range out.Domains {
		out.Domains[i].CRLs = slices.DeleteFunc(slices.Clone(d.CRLs), func(c trust.CRL) bool {
			rl, err := x509.ParseRevocationList(c.DER)
			return err != nil || !slices.ContainsFunc(d.Roots.Roots(), func(r *x509.Certificate) bool { return rl.CheckSignatureFrom(r) == nil })
		})
	}
	return &out
}

// describeBundle names the roots, active root and CRLs of b.
func describeBundle(b *trust.TrustBundle) string {
	var parts []string
	for _, d := range b.Domains {
		var roots []string
		for _, r := range d.Roots.Roots() {
			roots = append(roots, fingerprint(r)[:12])
		}
		var crls []string
		for _, c := range d.CRLs {
			if rl, err := x509.ParseRevocationList(c.DER); err == nil {
				crls = append(crls, fmt.Sprintf("%x#%s", rl.AuthorityKeyId[:4], rl.Number))
			}
		}
		parts = append(parts, fmt.Sprintf("%s roots %v crls %v", d.TrustDomain.Name(), roots, crls))
	}
	return fmt.Sprintf("{active %x; %s}", b.ActiveRoot[:6], strings.Join(parts, "; "))
}

// report logs the root CRL numbers in the order first seen and fails the
// test with what the observer found wrong.
func (o *bundleObserver) report(t *testing.T) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	for fp, s := range o.crls {
		t.Logf("root %s: CRL numbers %s", fp[:12], strings.Join(s.history, ", "))
	}
	t.Logf("GetBundle polls %v, failed %v; longest follower lag behind a published root CRL: %v", o.polls, o.failed, o.lag.Round(time.Millisecond))
	for _, e := range o.errs {
		t.Error(e)
	}
}

// rootCRLsOf returns the CRLs in b signed by one of b's roots, by the
// root's fingerprint (one per root: the same in every trust domain).
func rootCRLsOf(b *trust.TrustBundle) map[string]*x509.RevocationList {
	out := map[string]*x509.RevocationList{}
	for _, d := range b.Domains {
		if d.Federated {
			continue
		}
		for _, c := range d.CRLs {
			rl, err := x509.ParseRevocationList(c.DER)
			if err != nil {
				continue
			}
			for _, r := range d.Roots.Roots() {
				if rl.CheckSignatureFrom(r) == nil {
					out[fingerprint(r)] = rl
				}
			}
		}
	}
	return out
}

// getBundle asks the root at addr for its bundle, trusting pool.
func getBundle(addr string, pool *x509.CertPool) (*trust.TrustBundle, error) {
	creds := credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: rootHost})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := meshcav1.NewBundleServiceClient(conn).GetBundle(ctx, &meshcav1.GetBundleRequest{})
	if err != nil {
		return nil, err
	}
	return trust.TrustBundleFromProto(resp.GetBundle())
}
