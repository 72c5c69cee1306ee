package store

import "context"

// Lease is a held leader lease: while it is held, no other process holding
// a lease of the same store holds one too. Stores that support it offer
// TryLeader(ctx) (Lease, bool, error), which takes the lease if it is free.
type Lease interface {
	// Held returns nil while the lease is still held, and an error once it
	// may have been lost (its connection died); the holder must then stop
	// acting as the leader and Release it.
	Held(ctx context.Context) error
	// Release gives the lease up. Calling it again does nothing.
	Release()
}
