package benchcpu

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Stat is what a benchmark needs of /proc/PID/stat: the process, its
// parent, and its CPU time and that of its waited-for children.
type Stat struct {
	PID, PPID                    string
	UTime, STime, CUTime, CSTime time.Duration
}

// ReadStat parses /proc/PID/stat at path (Linux). The command name (field
// 2) may contain spaces, so fields are counted after its closing
// parenthesis.
func ReadStat(path string) (Stat, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Stat{}, err
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return Stat{}, fmt.Errorf("%s: no command name", path)
	}
	f := strings.Fields(s[end+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return Stat{}, fmt.Errorf("%s: %d fields after the command name", path, len(f))
	}
	var ticks [4]time.Duration
	// Fields 14-17 (utime, stime, cutime, cstime) are f[11..14], in clock
	// ticks of USER_HZ, 100 per second on Linux.
	for i := range ticks {
		n, err := strconv.ParseInt(f[11+i], 10, 64)
		if err != nil {
			return Stat{}, fmt.Errorf("%s: %w", path, err)
		}
		ticks[i] = time.Duration(n) * (time.Second / 100)
	}
	return Stat{
		PID: strings.TrimSpace(s[:open]), PPID: f[1],
		UTime: ticks[0], STime: ticks[1], CUTime: ticks[2], CSTime: ticks[3],
	}, nil
}
