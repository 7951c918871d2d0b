// Package procstat reads this process's CPU time and memory, so benchmarks
// and the demo can report whether a run measured the swarm or the machine.
package procstat

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CPUSeconds is user + system CPU time used by the process so far.
func CPUSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// PeakRSS is the process's peak resident set in bytes.
func PeakRSS() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Maxrss * 1024 // KiB on Linux
}

// AnonRSS is the process's current private (anonymous) resident memory in
// bytes: heap and stacks, not the page cache of files it reads.
func AnonRSS() int64 { return StatusBytes("self", "RssAnon") }

// StatusBytes is a "kB" field (VmHWM, RssAnon, ...) of /proc/<pid>/status
// in bytes; pid "self" is this process. 0 when there is none.
func StatusBytes(pid, field string) int64 {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}
