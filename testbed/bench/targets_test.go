package bench

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// sane checks that v survives a JSON round trip with every named field > 0.
func sane(t *testing.T, v any, positive ...string) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range positive {
		if f, ok := m[k].(float64); !ok || f <= 0 {
			t.Errorf("%s = %v, want > 0 (%s)", k, m[k], b)
		}
	}
}

func TestSingle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := Single(ctx, SingleOptions{Size: 4 << 20, Rate: 40e6, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	sane(t, r, "single_seconds", "direct_seconds", "single_over_direct", "blob_bytes")
	// The caps apply: 4 MiB at 40 MB/s takes at least ~0.1 s (less the burst).
	if !r.Verified || r.DirectSeconds < 0.05 {
		t.Errorf("%+v", r)
	}
}

func TestWarm(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := Warm(ctx, WarmOptions{Size: 6 << 20, Reps: 3, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	sane(t, r, "agent_bytes_per_second", "registry_bytes_per_second", "warm_over_registry")
	if !r.RangeOK || r.RangeStatus != 206 || len(r.AgentSeconds) != 3 || len(r.RegistrySeconds) != 3 {
		t.Errorf("%+v", r)
	}
}

func TestTracker(t *testing.T) {
	r, err := Tracker(context.Background(), 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	sane(t, r, "announces_per_second", "p99_ms", "announces")
	if r.P99Ms < r.P50Ms || r.MaxMs < r.P99Ms {
		t.Errorf("quantiles out of order: %+v", r)
	}
}

// TestMemory builds the shoal binary and runs the agent as its own process.
func TestMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the shoal binary")
	}
	bin := shoalBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := Memory(ctx, MemoryOptions{Size: 8 << 20, Binary: bin, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	sane(t, r, "agent_private_peak_bytes", "agent_rss_peak_bytes", "samples", "pull_seconds")
	if !r.Verified || r.AgentRSSPeakBytes < r.AgentPrivatePeakBytes {
		t.Errorf("%+v", r)
	}
}

var shoalBin struct {
	sync.Mutex
	path string
}

// shoalBinary builds ./cmd/shoal once per test binary run (in a directory
// TestMain removes), or skips the test saying why it cannot.
func shoalBinary(t *testing.T) string {
	t.Helper()
	shoalBin.Lock()
	defer shoalBin.Unlock()
	if shoalBin.path != "" {
		return shoalBin.path
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to build the agent binary: the process-level test needs it")
	}
	bin := filepath.Join(testBinDir, "shoal")
	build := exec.Command(goTool, "build", "-o", bin, "../../cmd/shoal")
	build.Env = os.Environ()
	if out, err := build.CombinedOutput(); err != nil {
		t.Skipf("cannot build the agent binary, skipping the process-level test: %v\n%s", err, out)
	}
	shoalBin.path = bin
	return bin
}

var testBinDir string

func TestMain(m *testing.M) {
	var err error
	if testBinDir, err = os.MkdirTemp("", "shoal-bench-bin-"); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(testBinDir)
	os.Exit(code)
}

func TestPageReportingIsReportedWhenOn(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		content string
		on      bool
	}{{"9\n", true}, {"10", true}, {"11\n", false}, {"junk", false}} {
		path := filepath.Join(dir, "order")
		if err := os.WriteFile(path, []byte(c.content), 0o644); err != nil {
			t.Fatal(err)
		}
		got := pageReporting(path)
		if (got != "") != c.on {
			t.Errorf("page_reporting_order %q: got %q, want on=%v", c.content, got, c.on)
		}
		if c.on && !strings.Contains(got, "order "+strings.TrimSpace(c.content)) {
			t.Errorf("page_reporting_order %q: %q does not name the order", c.content, got)
		}
	}
	if got := pageReporting(filepath.Join(dir, "missing")); got != "" {
		t.Errorf("no parameter file: got %q, want empty", got)
	}
}
