package stack

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/meshca/meshca/ca"
)

func TestRootLeavesAnHour(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	authority := func(notAfter time.Time) *ca.Authority {
		return &ca.Authority{Certificate: &x509.Certificate{NotAfter: notAfter}}
	}
	for _, tc := range []struct {
		name                string
		interEnds, rootEnds time.Time
		wantErr             bool
	}{
		{"root far away", now.Add(30 * 24 * time.Hour), now.Add(365 * 24 * time.Hour), false},
		{"cut at the root, a day left", now.Add(24 * time.Hour), now.Add(24 * time.Hour), false},
		{"cut at the root, 30 minutes left", now.Add(30 * time.Minute), now.Add(30 * time.Minute), true},
		{"short by choice, not cut", now.Add(30 * time.Minute), now.Add(24 * time.Hour), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := rootLeavesAnHour(authority(tc.interEnds), authority(tc.rootEnds), now)
			if (err != nil) != tc.wantErr {
				t.Errorf("err = %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

func TestReplicaName(t *testing.T) {
	host := func(name string, err error) func() (string, error) {
		return func() (string, error) { return name, err }
	}
	for _, tc := range []struct {
		configured string
		hostname   func() (string, error)
		want       string
	}{
		{"east-0", host("ignored", nil), "east-0"},
		{"", host("meshca-issuer-7d9f-x2x9z", nil), "meshca-issuer-7d9f-x2x9z"},
		{"", host("Node-1.example.com", nil), "node-1"},
		{"", host("", errors.New("no host name")), ""},
	} {
		if got := replicaName(tc.configured, tc.hostname); got != tc.want {
			t.Errorf("replicaName(%q) = %q, want %q", tc.configured, got, tc.want)
		}
	}
}
