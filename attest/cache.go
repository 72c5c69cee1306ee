package attest

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// CacheConfig configures [NewCached].
type CacheConfig struct {
	// Size is the maximum number of cached identities; the least recently
	// used is evicted first. Zero (or negative) means 10000.
	Size int
	// TTL bounds how long an identity is reused after it was attested; it is
	// never reused past its Identity.Expiry either. Zero (or negative) means
	// 5 minutes.
	TTL time.Duration
}

// Validate rejects negative values, which NewCached would otherwise silently
// replace by defaults.
func (c CacheConfig) Validate() error {
	if c.Size < 0 {
		return fmt.Errorf("attestation cache: negative size %d", c.Size)
	}
	if c.TTL < 0 {
		return fmt.Errorf("attestation cache: negative ttl %s", c.TTL)
	}
	return nil
}

// NewCached returns an Attestor that remembers next's successful results, so
// that a workload renewing with the same token does not pay for signature
// verification (or an API round trip) every time.
//
// Entries are keyed by SHA-256 of the request's ClusterID and Token (the
// token itself is not retained) and are returned only until
// min(Identity.Expiry, attestation time + TTL). Errors, including
// ErrUnavailable, are never cached. Requests whose Token and ClusterID
// together exceed MaxTokenSize bytes bypass the cache. Concurrent misses for the same token each call next. The result
// is safe for concurrent use if next is.
func NewCached(next Attestor, cfg CacheConfig) Attestor {
	if cfg.Size <= 0 {
		cfg.Size = 10000
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 5 * time.Minute
	}
	entries, err := lru.New[[sha256.Size]byte, cacheEntry](cfg.Size)
	if err != nil {
		panic("attest: lru.New with positive size failed: " + err.Error()) // unreachable
	}
	return &cached{next: next, ttl: cfg.TTL, entries: entries}
}

type cached struct {
	next    Attestor
	ttl     time.Duration
	entries *lru.Cache[[sha256.Size]byte, cacheEntry]
}

type cacheEntry struct {
	id    Identity
	until time.Time // exclusive
}

func (c *cached) Attest(ctx context.Context, req Request) (Identity, error) {
	if len(req.Token)+len(req.ClusterID) > MaxTokenSize {
		// Bounds the pooled key buffers; next rejects such tokens anyway.
		return c.next.Attest(ctx, req)
	}
	key := cacheKey(req)
	if e, ok := c.entries.Get(key); ok {
		if time.Now().Before(e.until) {
			return e.id, nil
		}
		// A concurrent miss may have just stored a fresh entry that this
		// removes; that only costs a later miss.
		c.entries.Remove(key)
	}
	id, err := c.next.Attest(ctx, req)
	if err != nil {
		return Identity{}, err
	}
	now := time.Now()
	until := now.Add(c.ttl)
	if !id.Expiry.IsZero() && id.Expiry.Before(until) {
		until = id.Expiry
	}
	if now.Before(until) {
		c.entries.Add(key, cacheEntry{id: id, until: until})
	}
	return id, nil
}

// keyBufs holds scratch buffers for cacheKey, so a cache hit does not
// allocate. Buffers stay under MaxTokenSize plus a varint.
var keyBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, 2048)
	return &b
}}

// cacheKey hashes every Request field that affects the outcome of an
// attestation. The ClusterID is length-prefixed so that no two distinct
// requests share an input. A new Request field must be added here.
func cacheKey(req Request) [sha256.Size]byte {
	bp := keyBufs.Get().(*[]byte)
	b := binary.AppendUvarint((*bp)[:0], uint64(len(req.ClusterID)))
	b = append(b, req.ClusterID...)
	b = append(b, req.Token...)
	sum := sha256.Sum256(b)
	*bp = b
	keyBufs.Put(bp)
	return sum
}
