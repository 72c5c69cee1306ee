package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/meshca/meshca/internal/testkit"
)

// buildChain returns n chained events with distinct content.
func buildChain(n int) []AuditEvent {
	var head ChainHead
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	events := make([]AuditEvent, 0, n)
	for i := range n {
		ev := head.Next(AuditEvent{
			Time:     t0.Add(time.Duration(i) * time.Second),
			Actor:    "spiffe://example.org/ns/ca/sa/issuer",
			Action:   "certificate.issue",
			Cluster:  "east",
			SPIFFEID: "spiffe://example.org/ns/default/sa/web",
			Serial:   hex.EncodeToString([]byte{byte(i + 1)}),
			Detail:   "ttl=1h",
		})
		events = append(events, ev)
		head = HeadOf(ev)
	}
	return events
}

func TestCanonicalAuditEventLayout(t *testing.T) {
	ev := AuditEvent{
		Seq:      0x0102030405060708,
		Time:     time.Unix(0x11223344, 999_999_999).In(time.FixedZone("X", 3600)),
		Actor:    "a",
		Action:   "bc",
		Cluster:  "",
		SPIFFEID: "d",
		Serial:   "e",
		Detail:   "f",
		PrevHash: []byte("ignored"),
		Hash:     []byte("ignored"),
	}
	want := []byte{
		1,
		1, 2, 3, 4, 5, 6, 7, 8,
		0, 0, 0, 0, 0x11, 0x22, 0x33, 0x44,
		0, 0, 0, 1, 'a',
		0, 0, 0, 2, 'b', 'c',
		0, 0, 0, 0,
		0, 0, 0, 1, 'd',
		0, 0, 0, 1, 'e',
		0, 0, 0, 1, 'f',
	}
	if got := canonicalAuditEvent(ev); !bytes.Equal(got, want) {
		t.Fatalf("canonical encoding\n got %x\nwant %x", got, want)
	}
}

func TestCanonicalAuditEventFieldBoundaries(t *testing.T) {
	// Without length prefixes these two would encode the same bytes.
	a := AuditEvent{Actor: "ab", Action: "c"}
	b := AuditEvent{Actor: "a", Action: "bc"}
	if bytes.Equal(canonicalAuditEvent(a), canonicalAuditEvent(b)) {
		t.Fatal("moving bytes between fields does not change the encoding")
	}
}

func TestChainHashIsSHA256OfPrevAndCanonical(t *testing.T) {
	ev := AuditEvent{Seq: 7, Time: time.Unix(1700000000, 0), Actor: "x", Action: "y"}
	prev := bytes.Repeat([]byte{0xab}, HashSize)
	sum := sha256.Sum256(append(bytes.Clone(prev), canonicalAuditEvent(ev)...))
	if got := ChainHash(prev, ev); !bytes.Equal(got, sum[:]) {
		t.Fatalf("ChainHash = %x, want %x", got, sum)
	}
}

func TestChainHeadNext(t *testing.T) {
	var head ChainHead
	in := AuditEvent{
		Seq:      99, // ignored
		Time:     time.Date(2026, 1, 2, 3, 4, 5, 678, time.FixedZone("X", -7200)),
		Action:   "certificate.issue",
		PrevHash: []byte("caller junk"),
		Hash:     []byte("caller junk"),
	}
	first := head.Next(in)
	if first.Seq != 1 {
		t.Errorf("first Seq = %d, want 1", first.Seq)
	}
	if !bytes.Equal(first.PrevHash, make([]byte, HashSize)) {
		t.Errorf("genesis PrevHash = %x, want 32 zero bytes", first.PrevHash)
	}
	wantTime := time.Date(2026, 1, 2, 5, 4, 5, 0, time.UTC)
	if !first.Time.Equal(wantTime) || first.Time.Location() != time.UTC {
		t.Errorf("Time = %v, want %v", first.Time, wantTime)
	}
	if !bytes.Equal(first.Hash, ChainHash(first.PrevHash, first)) {
		t.Error("Hash does not match content")
	}
	second := HeadOf(first).Next(in)
	if second.Seq != 2 || !bytes.Equal(second.PrevHash, first.Hash) {
		t.Errorf("second = seq %d prev %x, want seq 2 prev %x", second.Seq, second.PrevHash, first.Hash)
	}
}

func TestVerifyChainAcceptsIntactChains(t *testing.T) {
	for _, n := range []int{0, 1, 5} {
		if err := VerifyChain(buildChain(n)); err != nil {
			t.Errorf("%d events: %v", n, err)
		}
	}
}

func TestVerifyChainDetectsTampering(t *testing.T) {
	tests := []struct {
		name    string
		tamper  func([]AuditEvent) []AuditEvent
		wantSeq int64
	}{
		{
			name:    "changed detail",
			tamper:  func(e []AuditEvent) []AuditEvent { e[2].Detail = "ttl=24h"; return e },
			wantSeq: 3,
		},
		{
			name:    "changed time",
			tamper:  func(e []AuditEvent) []AuditEvent { e[3].Time = e[3].Time.Add(time.Hour); return e },
			wantSeq: 4,
		},
		{
			name: "changed and re-hashed",
			tamper: func(e []AuditEvent) []AuditEvent {
				e[2].Serial = "ff"
				e[2].Hash = ChainHash(e[2].PrevHash, e[2])
				return e
			},
			wantSeq: 4, // the row itself is consistent; the next link is not
		},
		{
			name:    "changed hash",
			tamper:  func(e []AuditEvent) []AuditEvent { e[1].Hash[0] ^= 1; return e },
			wantSeq: 2,
		},
		{
			name:    "deleted row",
			tamper:  func(e []AuditEvent) []AuditEvent { return append(e[:2], e[3:]...) },
			wantSeq: 3,
		},
		{
			name:    "deleted first row",
			tamper:  func(e []AuditEvent) []AuditEvent { return e[1:] },
			wantSeq: 1,
		},
		{
			name: "deleted row and renumbered",
			tamper: func(e []AuditEvent) []AuditEvent {
				e = append(e[:2], e[3:]...)
				for i := range e {
					e[i].Seq = int64(i + 1)
				}
				return e
			},
			wantSeq: 3,
		},
		{
			name: "reordered rows",
			tamper: func(e []AuditEvent) []AuditEvent {
				e[1], e[2] = e[2], e[1]
				return e
			},
			wantSeq: 2,
		},
		{
			name: "swapped content, seq kept",
			tamper: func(e []AuditEvent) []AuditEvent {
				e[1].Seq, e[3].Seq = e[3].Seq, e[1].Seq
				e[1], e[3] = e[3], e[1]
				return e
			},
			wantSeq: 2,
		},
		{
			name:    "duplicated row",
			tamper:  func(e []AuditEvent) []AuditEvent { return append(e[:3], e[2:]...) },
			wantSeq: 3,
		},
		{
			name:    "non-zero genesis prev hash",
			tamper:  func(e []AuditEvent) []AuditEvent { e[0].PrevHash[5] = 1; return e },
			wantSeq: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyChain(tt.tamper(buildChain(5)))
			var broken *BrokenLinkError
			if !errors.As(err, &broken) {
				t.Fatalf("VerifyChain = %v, want *BrokenLinkError", err)
			}
			if broken.Seq != tt.wantSeq {
				t.Fatalf("broken at seq %d (%s), want %d", broken.Seq, broken.Reason, tt.wantSeq)
			}
		})
	}
}

func TestChainVerifierStaysBroken(t *testing.T) {
	events := buildChain(3)
	events[0].Detail = "changed"
	var v ChainVerifier
	first := v.Verify(events[0])
	if first == nil {
		t.Fatal("tampered first event verified")
	}
	if err := v.Verify(events[1]); err != first {
		t.Fatalf("after a break Verify = %v, want the first error %v", err, first)
	}
	if v.Head().Seq != 0 {
		t.Fatalf("Head().Seq = %d after a failed first event, want 0", v.Head().Seq)
	}
}

func TestNewChainVerifierResumesFromHead(t *testing.T) {
	events := buildChain(5)
	v := newChainVerifier(HeadOf(events[1]))
	for _, ev := range events[2:] {
		if err := v.Verify(ev); err != nil {
			t.Fatalf("seq %d: %v", ev.Seq, err)
		}
	}
	if got := v.Head(); got.Seq != 5 || !bytes.Equal(got.Hash, events[4].Hash) {
		t.Fatalf("Head = %+v, want seq 5", got)
	}
	// An anchor that does not match the stored chain is a break.
	anchor := HeadOf(events[1])
	anchor.Hash = bytes.Repeat([]byte{1}, HashSize)
	err := newChainVerifier(anchor).Verify(events[2])
	var broken *BrokenLinkError
	if !errors.As(err, &broken) || broken.Seq != 3 {
		t.Fatalf("Verify against wrong anchor = %v, want break at seq 3", err)
	}
}

// TestChainVerifierAnchor checks what an anchor adds to a chain that links
// up on its own: a cut-off tail and a tail rewritten with fresh hashes.
func TestChainVerifierAnchor(t *testing.T) {
	chain := buildChain(6)
	anchor := HeadOf(chain[4]) // seq 5
	rewritten := append([]AuditEvent(nil), chain[:3]...)
	head := HeadOf(rewritten[2])
	for _, ev := range chain[3:] {
		ev.Detail = "rewritten"
		ev = head.Next(ev)
		rewritten = append(rewritten, ev)
		head = HeadOf(ev)
	}
	for _, tt := range []struct {
		name    string
		events  []AuditEvent
		wantErr string // "" for success
	}{
		{"whole chain", chain, ""},
		{"ends at the anchor", chain[:5], ""},
		{"tail cut before the anchor", chain[:4], "the chain ends at seq 4"},
		{"empty chain", nil, "the chain ends at seq 0"},
		{"rewritten and re-hashed from seq 4", rewritten, "the event at seq 5 has hash"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := VerifyChain(tt.events); err != nil {
				t.Fatalf("without the anchor the chain must verify: %v", err)
			}
			var v ChainVerifier
			v.Anchor(anchor)
			for _, ev := range tt.events {
				if err := v.Verify(ev); err != nil {
					break
				}
			}
			err := v.Finish()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Finish: %v", err)
				}
				return
			}
			var ae *AnchorError
			if !errors.As(err, &ae) || ae.Anchor.Seq != 5 || !bytes.Contains([]byte(err.Error()), []byte(tt.wantErr)) {
				t.Fatalf("Finish = %v, want an *AnchorError at seq 5 containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestValidateKeepsConfig(t *testing.T) {
	testkit.ValidateKeepsConfig(t, &GroupCommitConfig{}, &RetentionConfig{}, &Revocation{})
}
