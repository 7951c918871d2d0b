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

// PeakRSS is the process's peak resident set in bytes: its memory's high-water
// mark (VmHWM). Not getrusage's maxrss, which Linux carries over an exec from
// the memory the process had before it: a child that os/exec starts from a
// process holding 2 GiB reports 2 GiB there.
func PeakRSS() int64 {
	if n := StatusBytes("self", "VmHWM"); n > 0 {
		return n
	}
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

// Syscalls is how many read-like and write-like system calls (read, pread,
// readv; write, pwrite, writev, sendfile, ...) the process has made so far
// (/proc/self/io's syscr and syscw; not recvmsg nor sendmsg, which skip the
// VFS): a count that, unlike CPU time, does not move with the machine's
// load. Zeros when the kernel does not keep it.
func Syscalls() (reads, writes int64) {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "syscr":
			reads = n
		case "syscw":
			writes = n
		}
	}
	return reads, writes
}
