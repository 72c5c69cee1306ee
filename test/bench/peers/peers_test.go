package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

func TestParseStatCPU(t *testing.T) {
	// Fields 14 and 15 (utime, stime) are 1234 and 66 ticks; the command
	// name holds a space and a parenthesis.
	stat := "4242 (a b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 66 7 8 20 0 3 0 99 1000 50"
	got, err := parseStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if want := 1300 * clockTick; got != want {
		t.Fatalf("parseStatCPU = %v, want %v", got, want)
	}
	if _, err := parseStatCPU("4242 (x) S 1 2"); err == nil {
		t.Fatal("parseStatCPU accepted a truncated line")
	}
}

func TestProcCPUOfThisProcess(t *testing.T) {
	// Burn some CPU so that at least one tick is charged.
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	got, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if got <= 0 {
		t.Fatalf("procCPU(self) = %v after a busy loop, want > 0", got)
	}
}

func TestCPUDeltaCountsNewProcessesFromZero(t *testing.T) {
	before := map[int]time.Duration{1: time.Second, 2: 2 * time.Second}
	after := map[int]time.Duration{1: 3 * time.Second, 3: 500 * time.Millisecond}
	if got, want := cpuDelta(before, after), 2500*time.Millisecond; got != want {
		t.Fatalf("cpuDelta = %v, want %v", got, want)
	}
}

func TestSummarize(t *testing.T) {
	s := &system{rounds: []roundResult{
		{ops: 100, wall: time.Second, cpu: 50 * time.Millisecond},
		{ops: 100, wall: time.Second, cpu: 30 * time.Millisecond},
	}}
	for i := range 200 {
		s.latencies = append(s.latencies, time.Duration(200-i)*time.Millisecond)
	}
	got := s.summarize()
	want := summary{perSec: 100, cpuPerCert: 400 * time.Microsecond, cpuMin: 300 * time.Microsecond,
		cpuMax: 500 * time.Microsecond, p50: 100 * time.Millisecond, p99: 198 * time.Millisecond}
	if got != want {
		t.Fatalf("summarize = %+v, want %+v", got, want)
	}
}

// TestStepCAConfigAndToken checks what step-ca reads: ca.json names the
// files written beside it and a JWK provisioner whose key ID is the one the
// one-time tokens carry, and the token verifies with that key and holds
// the claims step-ca's JWK provisioner checks.
func TestStepCAConfigAndToken(t *testing.T) {
	dir := t.TempDir()
	_, provKey, err := writeStepConfig(dir, "127.0.0.1:9000")
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Root, Crt, Key string
		Authority      struct {
			Provisioners []struct {
				Type, Name string
				Key        jose.JSONWebKey
			}
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "ca.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &conf); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{conf.Root, conf.Crt, conf.Key} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("ca.json names %q: %v", f, err)
		}
	}
	if len(conf.Authority.Provisioners) != 1 || conf.Authority.Provisioners[0].Type != "JWK" {
		t.Fatalf("provisioners %+v, want one JWK", conf.Authority.Provisioners)
	}
	prov := conf.Authority.Provisioners[0]

	signer, err := es256Signer(provKey)
	if err != nil {
		t.Fatal(err)
	}
	st := &stepServer{addr: "127.0.0.1:9000", signer: signer}
	ws, err := newWorkloads(1)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := st.ott(ws[0], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if kid := jws.Signatures[0].Header.KeyID; kid != prov.Key.KeyID {
		t.Fatalf("token kid %q, provisioner kid %q", kid, prov.Key.KeyID)
	}
	payload, err := jws.Verify(prov.Key.Key)
	if err != nil {
		t.Fatalf("token does not verify with the provisioner's key: %v", err)
	}
	var claims struct {
		Iss, Sub, Aud, Jti string
		Sans               []string
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	id := ws[0].id.String()
	if claims.Iss != prov.Name || claims.Sub != id || claims.Aud != "https://127.0.0.1:9000/1.0/sign" ||
		claims.Jti == "" || len(claims.Sans) != 1 || claims.Sans[0] != id {
		t.Fatalf("claims %+v", claims)
	}
	if !strings.HasPrefix(id, "spiffe://"+trustDomain+"/ns/bench/sa/") {
		t.Fatalf("workload id %s", id)
	}
}
