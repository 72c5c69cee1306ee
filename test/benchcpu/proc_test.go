package benchcpu

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestReadStatSelf(t *testing.T) {
	// Burn a little CPU so the counters are non-zero.
	x := 0
	for i := range 50_000_000 {
		x += i
	}
	st, err := ReadStat("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	if st.PID != strconv.Itoa(os.Getpid()) || st.PPID != strconv.Itoa(os.Getppid()) {
		t.Errorf("pid %s ppid %s, want %d %d", st.PID, st.PPID, os.Getpid(), os.Getppid())
	}
	if st.UTime+st.STime <= 0 || x == 0 {
		t.Errorf("no CPU time: %+v", st)
	}
}

func TestReadStatCommandWithSpacesAndParens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stat")
	line := "42 (a b) c)) S 7 42 42 0 -1 4194560 100 0 0 0 250 50 3 1 20 0 1 0 100 1000 10\n"
	if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := ReadStat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.PID != "42" || st.PPID != "7" || st.UTime.Seconds() != 2.5 || st.STime.Seconds() != 0.5 ||
		st.CUTime.Milliseconds() != 30 || st.CSTime.Milliseconds() != 10 {
		t.Errorf("parsed %+v", st)
	}
}

func TestReadStatRejectsGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stat")
	for _, line := range []string{"", "no parens here", "1 (x) S 1 2"} {
		if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadStat(path); err == nil {
			t.Errorf("ReadStat(%q) succeeded", line)
		}
	}
}
