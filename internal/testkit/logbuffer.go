package testkit

import (
	"bytes"
	"sync"
)

// LogBuffer is a bytes.Buffer that is safe for concurrent writers (a logger,
// exec's output copiers) and readers (the test). The zero value is empty and
// ready to use; a LogBuffer must not be copied after first use.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
