package multicluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"go.step.sm/crypto/pemutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	pb "istio.io/api/security/v1alpha1"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/trust"
)

const (
	// haRequestTimeout bounds one CreateCertificate call. A call to a
	// live replica that takes longer fails the test.
	haRequestTimeout = 10 * time.Second
	// haPause is how long a client waits between calls (it spares the two
	// shared cores); after an error it waits haRetryPause.
	haPause      = 5 * time.Millisecond
	haRetryPause = 50 * time.Millisecond
	// haReconnectGrace is how long after a restarted replica listens again
	// its clients may still fail: their connections reconnect with backoff.
	haReconnectGrace = 2 * time.Second
)

// haAttempt is one CreateCertificate call.
type haAttempt struct {
	client     int
	replica    *haReplica
	start, end time.Time
	chain      []*x509.Certificate // on success: leaf first
	err        error
}

// haOutage is when a replica was signalled (just before the SIGKILL was
// sent), killed (once it was sent), reaped and listening again.
type haOutage struct {
	signalled, killed, reaped, restarted time.Time
}

// haLoad is clients issuing against the replicas of some deployments.
type haLoad struct {
	stopc chan struct{}
	wg    sync.WaitGroup

	mu       sync.Mutex
	attempts []haAttempt
	outages  map[*haReplica]*haOutage
}

// startLoad starts n clients, client i of deployment i%len(deployments),
// each with its own service account, key and connections, alternating
// between the replicas of its deployment.
func startLoad(t *testing.T, deployments []*haDeployment, n int) *haLoad {
	t.Helper()
	l := &haLoad{stopc: make(chan struct{}), outages: map[*haReplica]*haOutage{}}
	for i := range n {
		d := deployments[i%len(deployments)]
		call := haCaller(t, d, fmt.Sprintf("client-%d", i))
		l.wg.Go(func() { l.client(i, d, call) })
	}
	t.Cleanup(l.stop)
	return l
}

// haCaller returns a function that asks replica i of d for a certificate
// as service account sa, on connections of its own.
func haCaller(t *testing.T, d *haDeployment, sa string) func(i int) ([]*x509.Certificate, error) {
	t.Helper()
	roots := x509.NewCertPool()
	for _, r := range d.replicas {
		b, err := os.ReadFile(r.BundlePath())
		if err != nil || !roots.AppendCertsFromPEM(b) {
			t.Fatalf("%s: %v", r.BundlePath(), err)
		}
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "localhost"})
	reconnect := backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 200 * time.Millisecond}
	var clients []pb.IstioCertificateServiceClient
	for _, r := range d.replicas {
		conn, err := grpc.NewClient(r.addr, grpc.WithTransportCredentials(creds),
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: reconnect, MinConnectTimeout: time.Second}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		clients = append(clients, pb.NewIstioCertificateServiceClient(conn))
	}
	auth := metadata.Pairs("authorization", "Bearer "+d.devToken(t, sa))
	csr := haCSR(t, "ha-"+sa)
	return func(i int) ([]*x509.Certificate, error) {
		ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), auth), haRequestTimeout)
		defer cancel()
		resp, err := clients[i].CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: csr, ValidityDuration: 3600})
		if err != nil {
			return nil, err
		}
		var chain []*x509.Certificate
		for _, p := range resp.GetCertChain() {
			certs, err := pemutil.ParseCertificateBundle([]byte(p))
			if err != nil {
				return nil, fmt.Errorf("chain: %w", err)
			}
			chain = append(chain, certs...)
		}
		if len(chain) < 2 {
			return nil, fmt.Errorf("chain of %d certificates", len(chain))
		}
		return chain, nil
	}
}

// haCSR is a PEM CSR for the cached key of name.
func haCSR(t *testing.T, name string) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, testkit.Key(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// client calls replica (id+n) % replicas of d on its n-th call until stop.
func (l *haLoad) client(id int, d *haDeployment, call func(i int) ([]*x509.Certificate, error)) {
	for n := 0; ; n++ {
		select {
		case <-l.stopc:
			return
		default:
		}
		i := (id + n) % len(d.replicas)
		a := haAttempt{client: id, replica: d.replicas[i], start: time.Now()}
		a.chain, a.err = call(i)
		a.end = time.Now()
		l.mu.Lock()
		l.attempts = append(l.attempts, a)
		l.mu.Unlock()
		pause := haPause
		if a.err != nil {
			pause = haRetryPause
		}
		select {
		case <-l.stopc:
			return
		case <-time.After(pause):
		}
	}
}

// stop ends the clients after their current call and waits for them; no
// call is in flight afterwards.
func (l *haLoad) stop() {
	select {
	case <-l.stopc:
	default:
		close(l.stopc)
	}
	l.wg.Wait()
}

// kill ends r with SIGKILL and waits until it is reaped.
func (l *haLoad) kill(t *testing.T, r *haReplica) {
	t.Helper()
	o := &haOutage{signalled: time.Now()}
	if err := r.Kill(); err != nil {
		t.Fatalf("kill %s: %v", r.name, err)
	}
	o.killed = time.Now()
	o.reaped = o.killed
	l.mu.Lock()
	l.outages[r] = o
	l.mu.Unlock()
}

// restarted records that r listens again.
func (l *haLoad) restarted(r *haReplica) {
	l.mu.Lock()
	l.outages[r].restarted = time.Now()
	l.mu.Unlock()
}

// waitSettled waits until every client, and every replica in victims, has
// had a call succeed that started after the last restart.
func (l *haLoad) waitSettled(t *testing.T, victims []*haReplica, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		missing := l.unsettled(victims)
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no successful call since the restarts, %v later: %v", timeout, missing)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// unsettled names the clients and victims without a success that started
// after the last restart.
func (l *haLoad) unsettled(victims []*haReplica) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var since time.Time
	for _, o := range l.outages {
		if o.restarted.After(since) {
			since = o.restarted
		}
	}
	clients, replicas := map[int]bool{}, map[*haReplica]bool{}
	maxClient := 0
	for _, a := range l.attempts {
		maxClient = max(maxClient, a.client)
		if a.err == nil && a.start.After(since) {
			clients[a.client], replicas[a.replica] = true, true
		}
	}
	var missing []string
	for c := range maxClient + 1 {
		if !clients[c] {
			missing = append(missing, fmt.Sprintf("client-%d", c))
		}
	}
	for _, r := range victims {
		if !replicas[r] {
			missing = append(missing, r.name)
		}
	}
	return missing
}

// outageError reports whether a failed call a falls in an outage of its
// replica: it ended after the SIGKILL and started before the replica had
// listened again for haReconnectGrace.
func (l *haLoad) outageError(a haAttempt) bool {
	o := l.outages[a.replica]
	return o != nil && !a.end.Before(o.signalled) && a.start.Before(o.restarted.Add(haReconnectGrace))
}

// received returns the chains the clients of d received.
func (l *haLoad) received(d *haDeployment) [][]*x509.Certificate {
	l.mu.Lock()
	defer l.mu.Unlock()
	var chains [][]*x509.Certificate
	for _, a := range l.attempts {
		if a.err == nil && a.replica.deployment == d {
			chains = append(chains, a.chain)
		}
	}
	return chains
}

// unanswered counts the calls to replicas of d that may have been issued
// and stored without the client receiving the certificate: the calls in
// flight at a SIGKILL that returned no certificate (to a killed replica,
// started before the kill was sent, ended after the signal was about to
// be).
func (l *haLoad) unanswered(d *haDeployment) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.attempts {
		o := l.outages[a.replica]
		if a.err != nil && a.replica.deployment == d && o != nil && a.start.Before(o.killed) && !a.end.Before(o.signalled) {
			n++
		}
	}
	return n
}

// report logs the figures per replica and fails the test for any failed
// call outside an outage of its replica.
func (l *haLoad) report(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	type figures struct{ calls, ok, outageErrs, otherErrs int }
	per := map[*haReplica]*figures{}
	var order []*haReplica
	for _, a := range l.attempts {
		f := per[a.replica]
		if f == nil {
			f = &figures{}
			per[a.replica] = f
			order = append(order, a.replica)
		}
		f.calls++
		switch {
		case a.err == nil:
			f.ok++
		case l.outageError(a):
			f.outageErrs++
		default:
			f.otherErrs++
			if f.otherErrs <= 3 {
				t.Errorf("%s: call of client-%d at %s failed outside an outage: %v", a.replica.name, a.client, a.start.Format(time.StampMilli), a.err)
			}
		}
	}
	var total figures
	for _, r := range order {
		f := per[r]
		total.calls, total.ok, total.outageErrs, total.otherErrs = total.calls+f.calls, total.ok+f.ok, total.outageErrs+f.outageErrs, total.otherErrs+f.otherErrs
		t.Logf("%s: %d calls, %d certificates, %d errors during its outage, %d other errors", r.name, f.calls, f.ok, f.outageErrs, f.otherErrs)
	}
	t.Logf("all replicas: %d calls, %d certificates, %d errors during outages, %d other errors", total.calls, total.ok, total.outageErrs, total.otherErrs)
	for r, o := range l.outages {
		t.Logf("%s: reaped %v after SIGKILL, listening again %v later", r.name, o.reaped.Sub(o.signalled).Round(time.Millisecond), o.restarted.Sub(o.reaped).Round(time.Millisecond))
	}
}

// checkVerifies checks that every chain received verifies against the
// bundle.pem of every replica of d.
func checkVerifies(t *testing.T, d *haDeployment, chains [][]*x509.Certificate) {
	t.Helper()
	for _, r := range d.replicas {
		roots, err := pemutil.ReadCertificateBundle(r.BundlePath())
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		for _, c := range roots {
			pool.AddCert(c)
		}
		failed := 0
		for _, chain := range chains {
			inter := x509.NewCertPool()
			for _, c := range chain[1:] {
				inter.AddCert(c)
			}
			_, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			if err != nil {
				if failed++; failed <= 3 {
					t.Errorf("certificate %s does not verify against %s's bundle.pem: %v", trust.SerialHex(chain[0].SerialNumber), r.name, err)
				}
			}
		}
		if failed > 0 {
			t.Errorf("%d of %d certificates of %s do not verify against %s's bundle.pem", failed, len(chains), d.name, r.name)
		}
	}
}

// checkStored compares the certificates received from d with the rows of
// its store. The rule: every certificate received is stored (once; serials
// are unique), and a stored certificate that no client received is allowed
// only for a call in flight at a SIGKILL that returned no certificate (the
// calls unanswered counts): stored - received <= unanswered.
func checkStored(t *testing.T, d *haDeployment, chains [][]*x509.Certificate, unanswered int) {
	t.Helper()
	stored := storedSerials(t, d.dsn)
	received := map[string]bool{}
	var errs []error
	for _, chain := range chains {
		serial := trust.SerialHex(chain[0].SerialNumber)
		if received[serial] && len(errs) < 5 {
			errs = append(errs, fmt.Errorf("serial %s received twice", serial))
		}
		received[serial] = true
		if !stored[serial] && len(errs) < 5 {
			errs = append(errs, fmt.Errorf("certificate %s received but not stored", serial))
		}
	}
	extra := 0
	for serial := range stored {
		if !received[serial] {
			extra++
		}
	}
	t.Logf("%s: %d certificates received, %d stored, %d stored but not received, %d calls cut off by SIGKILL",
		d.name, len(received), len(stored), extra, unanswered)
	if extra > unanswered {
		errs = append(errs, fmt.Errorf("%d certificates stored that no client received, more than the %d calls cut off by SIGKILL", extra, unanswered))
	}
	if err := errors.Join(errs...); err != nil {
		t.Errorf("%s: %v", d.name, err)
	}
}
