package bench

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/internal/fsutil"
)

// DefaultStallAfter is how long a bench pull may go without a byte before
// it counts as stalled: the swarm rows' first bytes come within a second or
// two, so ten seconds without one is a fault to look at, not a slow start.
const DefaultStallAfter = 10 * time.Second

// stallWatch counts the pulls that stalled (no byte in stallAfter) and, if
// dir is set, captures the moment the first one did: the goroutines of the
// swarm's process and of the client process, and the kernel's TCP counters
// then and at the run's start, so a rare stall can be read after the fact
// (one run in about 35 once lost 27 of 64 pulls after 30 s without a byte).
type stallWatch struct {
	dir     string
	log     *slog.Logger
	clients *clientProcess
	count   atomic.Int64
	once    sync.Once
}

// netFiles are the kernel's counters a stall dump copies: listen queue
// overflows and drops, SYN retransmits, resets (TcpExt, Tcp) and socket
// counts.
var netFiles = []string{"/proc/net/netstat", "/proc/net/snmp", "/proc/net/sockstat"}

// start notes the counters at the run's start.
func (w *stallWatch) start() error {
	if w.dir == "" {
		return nil
	}
	if err := os.MkdirAll(w.dir, 0o755); err != nil {
		return fmt.Errorf("bench: stall dump: %w", err)
	}
	copyNetFiles(w.dir, "start")
	return nil
}

// stalled is the client process's onStall.
func (w *stallWatch) stalled(id int) {
	w.count.Add(1)
	w.once.Do(func() {
		w.log.Warn("bench: a pull has had no byte", "pull", id, "after", w.clients.stallAfter, "dump", w.dir)
		if w.dir == "" {
			return
		}
		copyNetFiles(w.dir, "stall")
		if err := dumpGoroutines(filepath.Join(w.dir, "swarm-goroutines.txt")); err != nil {
			w.log.Warn("bench: stall dump", "err", err)
		}
		w.dumpClients()
	})
}

// clientDumpWait is how long the client process has to write its dump
// before it counts as stuck itself.
const clientDumpWait = 3 * time.Second

// dumpClients asks the client process for its goroutines. A client
// process that does not write them in clientDumpWait is itself stuck: its
// threads' kernel state is copied from /proc and it gets SIGQUIT, whose
// goroutine dump (written by the runtime's signal handler, which needs no
// scheduler) goes to the bench's stderr, and the run's pulls fail.
func (w *stallWatch) dumpClients() {
	path := filepath.Join(w.dir, "clients-goroutines.txt")
	if err := w.clients.dump(path); err != nil {
		w.log.Warn("bench: stall dump", "err", err)
		return
	}
	for end := time.Now().Add(clientDumpWait); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
	}
	pid := w.clients.cmd.Process.Pid
	var b []byte
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, t := range tasks {
		for _, f := range []string{"stat", "wchan", "syscall"} {
			c, _ := os.ReadFile(filepath.Join(t, f))
			b = fmt.Appendf(b, "%s/%s: %s\n", t, f, c)
		}
	}
	_ = os.WriteFile(filepath.Join(w.dir, "clients-stuck.txt"), b, 0o644)
	w.log.Warn("bench: the client process wrote no dump: stuck; SIGQUIT", "pid", pid, "wait", clientDumpWait)
	_ = w.clients.cmd.Process.Signal(syscall.SIGQUIT)
}

// copyNetFiles copies netFiles into dir as <name>-<when>; what cannot be
// read is skipped (not every kernel has every file).
func copyNetFiles(dir, when string) {
	for _, f := range netFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		_ = os.WriteFile(filepath.Join(dir, filepath.Base(f)+"-"+when), b, 0o644)
	}
}

// dumpGoroutines writes every goroutine's stack, with how long it has
// waited, to path (atomically: a reader never sees half a dump).
func dumpGoroutines(path string) error {
	var b bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&b, 2); err != nil {
		return fmt.Errorf("goroutine dump: %w", err)
	}
	if err := fsutil.WriteFileAtomicPerm(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("goroutine dump %s: %w", path, err)
	}
	return nil
}
