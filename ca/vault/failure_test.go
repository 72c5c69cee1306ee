package vault

import (
	"context"
	"crypto"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
	"github.com/meshca/meshca/test/vaulttest"
)

// failTimeout bounds each call in the failure tests; failures must be
// reported well within it.
const failTimeout = 5 * time.Second

func signErr(s *Signer) error {
	_, err := s.Sign(nil, digestOf(crypto.SHA256, "x"), crypto.SHA256)
	return err
}

// wantFailure signs and checks that the call fails with sentinel, names
// it, and returns within failTimeout plus slack.
func wantFailure(t *testing.T, s *Signer, sentinel error) {
	t.Helper()
	start := time.Now()
	err := signErr(s)
	if elapsed := time.Since(start); elapsed > failTimeout+2*time.Second {
		t.Errorf("Sign took %v to fail", elapsed)
	}
	if !errors.Is(err, sentinel) {
		t.Fatalf("Sign: %v, want %v", err, sentinel)
	}
	if !strings.Contains(err.Error(), sentinel.Error()) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("error %q should name %q on one line", err, sentinel)
	}
	t.Logf("%v after %v", err, time.Since(start).Round(time.Millisecond))
}

// recovers polls until the same Signer signs again.
func recovers(t *testing.T, s *Signer) {
	t.Helper()
	testkit.Eventually(t, 60*time.Second, "sign after recovery", func() error { return signErr(s) })
}

func TestSealedThenUnsealed(t *testing.T) {
	v := vaulttest.Start(t)
	cfg := tokenConfig(v, v.Token, vaulttest.KeyName(t))
	cfg.Timeout = failTimeout
	s := newSigner(t, cfg)
	mustSign(t, s)

	if err := v.Seal(); err != nil {
		t.Fatal(err)
	}
	wantFailure(t, s, ErrSealed)
	if err := v.Unseal(); err != nil {
		t.Fatal(err)
	}
	recovers(t, s)
}

// A Vault with file storage is stopped (calls fail: unreachable), started
// again (sealed), then unsealed: the same Signer, never recreated, signs
// with the same key again.
func TestStoppedThenRestarted(t *testing.T) {
	v := vaulttest.StartFile(t)
	cfg := tokenConfig(v, v.Token, vaulttest.KeyName(t))
	cfg.Timeout = failTimeout
	s := newSigner(t, cfg)
	mustSign(t, s)
	pub := s.Public()

	v.Stop()
	wantFailure(t, s, ErrUnreachable)
	if err := v.Restart(); err != nil {
		t.Fatal(err)
	}
	wantFailure(t, s, ErrSealed)
	if err := v.Unseal(); err != nil {
		t.Fatal(err)
	}
	recovers(t, s)
	again := newSigner(t, cfg)
	if !again.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
		t.Fatal("the key changed across the restart")
	}
}

func TestNewUnreachable(t *testing.T) {
	// Nothing listens there any more.
	cfg := Config{Address: "http://" + testkit.FreeAddr(t), KeyName: "k", Auth: AuthConfig{Token: "t"}, Timeout: failTimeout}
	start := time.Now()
	_, err := New(context.Background(), cfg)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("New: %v, want ErrUnreachable", err)
	}
	if elapsed := time.Since(start); elapsed > failTimeout+2*time.Second {
		t.Errorf("New took %v to fail", elapsed)
	}
	t.Log(err)
}

// A Vault that accepts connections but never answers: Sign gives up at
// Config.Timeout with ErrUnreachable, and works again when Vault answers.
func TestHungVault(t *testing.T) {
	v := vaulttest.Shared(t)
	p := newHangProxy(t, strings.TrimPrefix(v.Addr, "http://"))
	cfg := tokenConfig(v, v.Token, vaulttest.KeyName(t))
	cfg.Address = "http://" + p.addr()
	cfg.Timeout = time.Second
	s := newSigner(t, cfg)
	mustSign(t, s)

	p.setHang(true)
	// The kept-alive connection the proxy just closed may fail the first
	// call at once (EOF, also ErrUnreachable); the next one hangs.
	if err := signErr(s); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Sign: %v, want ErrUnreachable", err)
	}
	start := time.Now()
	err := signErr(s)
	if elapsed := time.Since(start); elapsed < cfg.Timeout || elapsed > cfg.Timeout+2*time.Second {
		t.Errorf("Sign failed after %v, want about %v", elapsed, cfg.Timeout)
	}
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sign: %v, want ErrUnreachable (deadline exceeded)", err)
	}
	t.Log(err)
	p.setHang(false)
	recovers(t, s)
}

// hangProxy forwards TCP connections to a target on loopback or, while
// hanging, accepts them and never answers.
type hangProxy struct {
	l      net.Listener
	target string

	mu    sync.Mutex
	hang  bool
	conns map[net.Conn]bool
}

func newHangProxy(t *testing.T, target string) *hangProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &hangProxy{l: l, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() {
		l.Close()
		p.closeAll()
	})
	go p.serve()
	return p
}

func (p *hangProxy) addr() string { return p.l.Addr().String() }

// setHang switches modes and drops every open connection, so that kept-alive
// connections follow the new mode too.
func (p *hangProxy) setHang(hang bool) {
	p.mu.Lock()
	p.hang = hang
	p.mu.Unlock()
	p.closeAll()
}

func (p *hangProxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *hangProxy) track(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns[c] = true
}

func (p *hangProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.track(c)
		p.mu.Lock()
		hang := p.hang
		p.mu.Unlock()
		if hang {
			go io.Copy(io.Discard, c) // read, never answer; closed by closeAll
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.track(up)
		go func() { io.Copy(up, c); up.Close() }()
		go func() { io.Copy(c, up); c.Close() }()
	}
}

// Vault over HTTPS: its CA from Config.CACertFile is trusted; without it
// the certificate is refused, and the error says so.
func TestTLSCA(t *testing.T) {
	v := vaulttest.StartTLS(t)
	cfg := tokenConfig(v, v.Token, vaulttest.KeyName(t))
	cfg.CACertFile = v.CAFile
	mustSign(t, newSigner(t, cfg))

	cfg.CACertFile = ""
	cfg.Timeout = failTimeout
	_, err := New(context.Background(), cfg)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("New without the CA: %v, want ErrUnreachable naming the certificate", err)
	}
	t.Log(err)
}
