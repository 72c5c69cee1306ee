package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"
)

// The audit log is a hash chain. Every event carries the hash of the event
// before it (PrevHash) and its own hash:
//
//	Hash = SHA-256(PrevHash || CanonicalAuditEvent(ev))
//
// The first event (Seq 1) has PrevHash = 32 zero bytes. Because Seq and Time
// are part of the hashed bytes, changing, deleting, inserting or reordering a
// row breaks the link at that row (or, if the attacker also re-hashed the row,
// at the row after it). What a chain cannot show on its own is a truncated
// tail or a chain rewritten from some row to the end: that takes an anchor kept
// elsewhere, such as a signed checkpoint of a recent [ChainHead] (see
// [ChainVerifier.Anchor]).

// HashSize is the length in bytes of PrevHash and Hash.
const HashSize = sha256.Size

// canonicalVersion is the first byte of the canonical encoding, so the
// encoding can change later without old and new bytes ever colliding.
const canonicalVersion = 1

// canonicalAuditEvent returns the bytes of ev that the chain hashes. The
// encoding, version 1, is, in this order:
//
//	version  1 byte, = 1
//	Seq      8 bytes, big-endian two's complement
//	Time     8 bytes, big-endian two's complement Unix seconds (sub-second
//	         parts and the time zone are not encoded)
//	Actor, Action, Cluster, SPIFFEID, Serial, Detail:
//	         each a 4-byte big-endian length followed by that many bytes
//
// PrevHash and Hash are not part of it. No field can bleed into the next, so
// two different events never have the same encoding.
func canonicalAuditEvent(ev AuditEvent) []byte {
	fields := [...]string{ev.Actor, ev.Action, ev.Cluster, ev.SPIFFEID, ev.Serial, ev.Detail}
	n := 1 + 8 + 8
	for _, f := range fields {
		n += 4 + len(f)
	}
	b := make([]byte, 0, n)
	b = append(b, canonicalVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(ev.Seq))
	b = binary.BigEndian.AppendUint64(b, uint64(ev.Time.Unix()))
	for _, f := range fields {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// ChainHash returns SHA-256(prevHash || CanonicalAuditEvent(ev)). It ignores
// ev.PrevHash and ev.Hash.
func ChainHash(prevHash []byte, ev AuditEvent) []byte {
	h := sha256.New()
	h.Write(prevHash)
	h.Write(canonicalAuditEvent(ev))
	return h.Sum(nil)
}

// ChainHead is the position of the last event of a chain. The zero value is
// the head of an empty chain: the next event gets Seq 1 and a PrevHash of
// HashSize zero bytes.
type ChainHead struct {
	Seq  int64
	Hash []byte // nil for an empty chain
}

// HeadOf returns the head of a chain whose last event is ev.
func HeadOf(ev AuditEvent) ChainHead {
	return ChainHead{Seq: ev.Seq, Hash: ev.Hash}
}

// prevHash is the PrevHash of the event after h.
func (h ChainHead) prevHash() []byte {
	if h.Seq == 0 && h.Hash == nil {
		return make([]byte, HashSize)
	}
	return h.Hash
}

// Next returns ev as the event after h: Seq = h.Seq+1, Time truncated to
// whole seconds in UTC, PrevHash and Hash filled in. Backends call it inside
// the transaction that read h, so that no other event can take the same Seq.
func (h ChainHead) Next(ev AuditEvent) AuditEvent {
	ev.Seq = h.Seq + 1
	ev.Time = time.Unix(ev.Time.Unix(), 0).UTC()
	ev.PrevHash = bytes.Clone(h.prevHash())
	ev.Hash = ChainHash(ev.PrevHash, ev)
	return ev
}

// BrokenLinkError reports the first event at which a chain does not verify.
type BrokenLinkError struct {
	// Seq is the sequence number at which the chain breaks: the event whose
	// content or links are wrong, or, for a gap, the first missing number.
	Seq    int64
	Reason string
}

func (e *BrokenLinkError) Error() string {
	return fmt.Sprintf("audit chain broken at seq %d: %s", e.Seq, e.Reason)
}

// ChainVerifier checks events one by one, in sequence order. The zero value
// expects a chain from its first event (Seq 1); newChainVerifier starts
// after a known head instead. A ChainVerifier is not safe for concurrent use.
type ChainVerifier struct {
	head    ChainHead
	anchors []ChainHead
	err     error
}

// newChainVerifier returns a verifier that expects the event after head, for
// checking the rest of a chain from a trusted point (for example an anchor).
func newChainVerifier(head ChainHead) *ChainVerifier {
	return &ChainVerifier{head: head}
}

// Verify checks that ev is the event that follows the ones verified so far.
// It returns nil, a *BrokenLinkError, or an *AnchorError when ev is at an
// anchor's seq with another hash; once it has failed it keeps returning
// that same error, because nothing after a break can be trusted.
func (v *ChainVerifier) Verify(ev AuditEvent) error {
	if v.err != nil {
		return v.err
	}
	want := v.head.Seq + 1
	switch {
	case ev.Seq > want:
		v.err = &BrokenLinkError{Seq: want, Reason: fmt.Sprintf("missing event: next seq is %d", ev.Seq)}
	case ev.Seq < want:
		v.err = &BrokenLinkError{Seq: ev.Seq, Reason: fmt.Sprintf("out of order: expected seq %d", want)}
	case !bytes.Equal(ev.PrevHash, v.head.prevHash()):
		v.err = &BrokenLinkError{Seq: ev.Seq, Reason: "prev_hash does not match the previous event's hash"}
	case !bytes.Equal(ev.Hash, ChainHash(ev.PrevHash, ev)):
		v.err = &BrokenLinkError{Seq: ev.Seq, Reason: "hash does not match the event's content"}
	default:
		if v.err = v.checkAnchors(ev); v.err == nil {
			v.head = HeadOf(ev)
		}
	}
	return v.err
}

// Anchor makes v require that the chain passes through a: that the event at
// a.Seq has hash a.Hash. An anchor is a head recorded outside the database
// (a signed checkpoint), so a chain that was truncated or rewritten from
// some event onwards, hashes and all, no longer matches it. Call Anchor
// before Verify, then [ChainVerifier.Finish] after the last event.
func (v *ChainVerifier) Anchor(a ChainHead) {
	v.anchors = append(v.anchors, a)
}

func (v *ChainVerifier) checkAnchors(ev AuditEvent) error {
	for _, a := range v.anchors {
		if a.Seq == ev.Seq && !bytes.Equal(a.Hash, ev.Hash) {
			return &AnchorError{Anchor: a, Reason: fmt.Sprintf("the event at seq %d has hash %x", ev.Seq, ev.Hash)}
		}
	}
	return nil
}

// Finish reports, after the last event, the first error of the chain, or an
// *AnchorError if the chain ended before the seq of an anchor: its tail was
// cut off. It returns nil if the chain verified and reached every anchor.
func (v *ChainVerifier) Finish() error {
	if v.err != nil {
		return v.err
	}
	for _, a := range v.anchors {
		if a.Seq > v.head.Seq {
			v.err = &AnchorError{Anchor: a, Reason: fmt.Sprintf("the chain ends at seq %d", v.head.Seq)}
			return v.err
		}
	}
	return nil
}

// AnchorError reports a chain that does not pass through an anchor: it has
// no event at the anchor's seq, or that event has another hash.
type AnchorError struct {
	Anchor ChainHead
	Reason string
}

func (e *AnchorError) Error() string {
	return fmt.Sprintf("audit chain does not reach the anchor at seq %d (hash %x): %s", e.Anchor.Seq, e.Anchor.Hash, e.Reason)
}

// Head returns the head after the last event that verified.
func (v *ChainVerifier) Head() ChainHead {
	return v.head
}

// VerifyChain checks events, which must be a whole chain from Seq 1 in
// sequence order. It returns nil or the *BrokenLinkError of the first bad
// link. An empty chain verifies.
func VerifyChain(events []AuditEvent) error {
	var v ChainVerifier
	for _, ev := range events {
		if err := v.Verify(ev); err != nil {
			return err
		}
	}
	return nil
}
