// Package checkpoint signs and verifies audit checkpoints: statements, signed
// with a key kept outside the database, that the audit chain had a given
// head (seq and hash) at a given time.
//
// A hash chain shows a changed or deleted event in its middle, but not a cut
// off tail, nor a tail rewritten from some event onwards with fresh hashes:
// whoever can write the database can do both and leave a chain that links
// up. A checkpoint shipped off the host (or only its signing key kept off the
// database) anchors the chain: `meshca audit verify --checkpoint FILE`
// fails when the chain no longer passes through the checkpoint's seq and
// hash. See [store.ChainVerifier.Anchor].
//
// A checkpoint file is a small JSON document:
//
//	{"version":1,"name":"cluster/east","seq":42,"hash":"<hex>",
//	 "time":"2026-03-01T12:00:00Z","key_id":"<hex>","signature":"<base64>"}
//
// The signature is an ASN.1 ECDSA signature over the SHA-256 of a binary
// encoding of the fields (a fixed domain string, then key_id, name, seq,
// hash and time, each length-prefixed or fixed-size), never over the JSON
// text, so whitespace and field order do not matter.
package checkpoint

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/meshca/meshca/store"
)

// Checkpoint is a signed statement that the audit chain called Name had
// Head at Time.
type Checkpoint struct {
	// Name identifies the chain: "root", or "cluster/<name>" for an issuer.
	Name string
	Head store.ChainHead
	// Time is when the head was read, whole seconds, UTC.
	Time time.Time
	// KeyID is the lower-case hex SHA-256 of the signing key's
	// SubjectPublicKeyInfo (DER); see keyID.
	KeyID string
}

// version is the only document version so far.
const version = 1

// document is the JSON form of a signed checkpoint.
type document struct {
	Version   int       `json:"version"`
	Name      string    `json:"name"`
	Seq       int64     `json:"seq"`
	Hash      string    `json:"hash"`
	Time      time.Time `json:"time"`
	KeyID     string    `json:"key_id"`
	Signature []byte    `json:"signature"`
}

// domain starts the signed bytes, so that a checkpoint signature can never
// be taken for a signature over anything else made with the same key.
const domain = "meshca audit checkpoint v1\n"

// signedBytes is what a signature covers: domain, then KeyID and Name each
// as a 4-byte big-endian length and the bytes, Seq as 8 bytes big-endian,
// the 32-byte Hash, and Time as 8 bytes big-endian Unix seconds.
func signedBytes(cp Checkpoint) []byte {
	b := []byte(domain)
	for _, f := range []string{cp.KeyID, cp.Name} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(cp.Head.Seq))
	b = append(b, cp.Head.Hash...)
	return binary.BigEndian.AppendUint64(b, uint64(cp.Time.Unix()))
}

// keyID returns the lower-case hex SHA-256 of pub's SubjectPublicKeyInfo.
func keyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// Sign returns the JSON document of cp signed by signer, an ECDSA key. It
// sets cp.KeyID from signer and truncates cp.Time to whole seconds, UTC.
func Sign(signer crypto.Signer, cp Checkpoint) ([]byte, error) {
	if err := checkHead(cp.Head); err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	if _, ok := signer.Public().(*ecdsa.PublicKey); !ok {
		return nil, fmt.Errorf("sign checkpoint: the key is a %T, want ECDSA", signer.Public())
	}
	kid, err := keyID(signer.Public())
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	cp.KeyID = kid
	cp.Time = time.Unix(cp.Time.Unix(), 0).UTC()
	digest := sha256.Sum256(signedBytes(cp))
	sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	data, err := json.MarshalIndent(document{
		Version: version, Name: cp.Name, Seq: cp.Head.Seq, Hash: hex.EncodeToString(cp.Head.Hash),
		Time: cp.Time, KeyID: cp.KeyID, Signature: sig,
	}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	return append(data, '\n'), nil
}

// verify parses a checkpoint document and checks its signature with pub. It
// fails if the document is malformed, was signed by another key, or its
// signature does not verify: a checkpoint that does not verify says nothing.
func verify(data []byte, pub crypto.PublicKey) (Checkpoint, error) {
	cp, sig, err := parse(data)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("verify checkpoint: %w", err)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return Checkpoint{}, fmt.Errorf("verify checkpoint: the key is a %T, want ECDSA", pub)
	}
	kid, err := keyID(pub)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("verify checkpoint: %w", err)
	}
	if cp.KeyID != kid {
		return Checkpoint{}, fmt.Errorf("verify checkpoint: signed by key %s, not by the given key %s", cp.KeyID, kid)
	}
	digest := sha256.Sum256(signedBytes(cp))
	if !ecdsa.VerifyASN1(ec, digest[:], sig) {
		return Checkpoint{}, errors.New("verify checkpoint: invalid signature")
	}
	return cp, nil
}

// ReadFile reads and verifies the checkpoint file at path with pub.
func ReadFile(path string, pub crypto.PublicKey) (Checkpoint, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Checkpoint{}, err
	}
	cp, err := verify(data, pub)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("%s: %w", path, err)
	}
	return cp, nil
}

func parse(data []byte) (Checkpoint, []byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var d document
	if err := dec.Decode(&d); err != nil {
		return Checkpoint{}, nil, fmt.Errorf("parse: %w", err)
	}
	if d.Version != version {
		return Checkpoint{}, nil, fmt.Errorf("unsupported version %d", d.Version)
	}
	hash, err := hex.DecodeString(d.Hash)
	if err != nil {
		return Checkpoint{}, nil, fmt.Errorf("hash: %w", err)
	}
	cp := Checkpoint{Name: d.Name, Head: store.ChainHead{Seq: d.Seq, Hash: hash}, Time: d.Time.UTC(), KeyID: d.KeyID}
	if err := checkHead(cp.Head); err != nil {
		return Checkpoint{}, nil, err
	}
	if len(d.Signature) == 0 {
		return Checkpoint{}, nil, errors.New("no signature")
	}
	return cp, d.Signature, nil
}

// checkHead refuses heads no chain has: a checkpoint of an empty chain
// anchors nothing.
func checkHead(h store.ChainHead) error {
	switch {
	case h.Seq <= 0:
		return fmt.Errorf("seq %d, want > 0", h.Seq)
	case len(h.Hash) != store.HashSize:
		return fmt.Errorf("hash of %d bytes, want %d", len(h.Hash), store.HashSize)
	}
	return nil
}
