package ca

import (
	"io/fs"
	"syscall"
	"testing"
	"time"
)

type fakeInfo struct {
	mode fs.FileMode
	uid  uint32
}

func (f fakeInfo) Name() string       { return "root-key.pem" }
func (f fakeInfo) Size() int64        { return 0 }
func (f fakeInfo) Mode() fs.FileMode  { return f.mode }
func (f fakeInfo) ModTime() time.Time { return time.Time{} }
func (f fakeInfo) IsDir() bool        { return false }
func (f fakeInfo) Sys() any           { return &syscall.Stat_t{Uid: f.uid} }

// TestPlatformSecret: only the shape of a kubelet Secret file for a
// non-root process (root's, read-only, group-readable at most) is let
// through; anything writable, readable by others, owned by someone else,
// or read by root itself is not.
func TestPlatformSecret(t *testing.T) {
	for _, tc := range []struct {
		name string
		info fakeInfo
		euid int
		want bool
	}{
		{"kubelet secret with fsGroup", fakeInfo{0o440, 0}, 65532, true},
		{"kubelet secret, owner only", fakeInfo{0o400, 0}, 65532, true},
		{"group writable", fakeInfo{0o460, 0}, 65532, false},
		{"others can read", fakeInfo{0o444, 0}, 65532, false},
		{"owner can write", fakeInfo{0o640, 0}, 65532, false},
		{"not root's", fakeInfo{0o440, 1000}, 65532, false},
		{"read by root", fakeInfo{0o440, 0}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := platformSecret(tc.info, tc.euid); got != tc.want {
				t.Errorf("platformSecret(%v uid %d, euid %d) = %v, want %v", tc.info.mode, tc.info.uid, tc.euid, got, tc.want)
			}
		})
	}
}
