package stack

import (
	"crypto/x509"
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
