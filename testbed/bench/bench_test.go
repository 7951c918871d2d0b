package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/testbed/localregistry"
)

func TestTMin(t *testing.T) {
	const mb = 1e6
	for _, tc := range []struct {
		n             int
		f, u, uo, uup float64
		cold          bool
		want          float64
	}{
		// One agent: its own link or the origin bounds it.
		{1, 100 * mb, 10 * mb, 10 * mb, 10 * mb, false, 10},
		// Many agents with an equal origin: N*F/(U+N*u) is close to F/u.
		{8, 256 * mb, 25 * mb, 25 * mb, 25 * mb, false, 8 * 256 / (25 + 8*25.0)},
		// A slow origin bounds everyone.
		{8, 100 * mb, 100 * mb, 1 * mb, 1 * mb, false, 100},
		// Cold origins also wait for a slower upstream.
		{2, 100 * mb, 10 * mb, 10 * mb, 5 * mb, true, 20},
	} {
		got := TMin(tc.n, tc.f, tc.u, tc.uo, tc.uup, tc.cold)
		want := max(tc.want, tc.f/tc.u)
		if math.Abs(got-want) > 1e-9 {
			t.Errorf("TMin(%+v) = %v, want %v", tc, got, want)
		}
	}
}

func TestSmallSwarmRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := Swarm(ctx, SwarmOptions{Agents: 3, Size: 6 << 20, PieceSize: 1 << 20, Rate: 20e6, Baseline: "direct", Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if !r.AllVerified || len(r.Failures) > 0 {
		t.Fatalf("failures: %v", r.Failures)
	}
	if r.UpstreamBlobGets != 1 || r.BytesFromUpstream < 6<<20 {
		t.Errorf("upstream: %d GETs, %d bytes", r.UpstreamBlobGets, r.BytesFromUpstream)
	}
	// Nothing can beat the physical bound (allow the token buckets' burst).
	if r.AgentSecondsP50 < 0.8*r.TMinSeconds || r.P50OverTMin <= 0 {
		t.Errorf("p50 %.2fs vs T_min %.2fs: faster than physics, the caps are not applied", r.AgentSecondsP50, r.TMinSeconds)
	}
	if r.BytesFromOrigins+r.BytesFromPeers < 3*6<<20 {
		t.Errorf("agents received %d+%d bytes over P2P, less than 3 blobs", r.BytesFromOrigins, r.BytesFromPeers)
	}
	if r.DirectSecondsP50 <= 0 || r.SpeedupP50 <= 0 {
		t.Errorf("direct baseline missing: %+v", r)
	}
	if r.CPUSeconds <= 0 || r.ClientCPUSeconds <= 0 || r.PeakRSSBytes <= 0 {
		t.Errorf("cpu %v, clients' cpu %v, rss %v", r.CPUSeconds, r.ClientCPUSeconds, r.PeakRSSBytes)
	}
	// Every byte came over a socket: at least one read per 64 KiB block.
	if r.ReadSyscalls < 3*6<<20/(64<<10) || r.WriteSyscalls <= 0 {
		t.Errorf("syscalls: %d reads, %d writes", r.ReadSyscalls, r.WriteSyscalls)
	}
	svg := SVG(&Results{Swarm: []*SwarmResult{r, r}})
	if strings.Count(svg, `font-weight="bold"`) != 2 || !strings.Contains(svg, ">T_min ") || !strings.HasPrefix(svg, "<svg") {
		t.Errorf("plot lacks its panels:\n%s", svg)
	}
}

func TestMeasureFloor(t *testing.T) {
	f, err := MeasureFloor(context.Background(), t.TempDir(), 32<<20)
	if err != nil {
		t.Fatal(err)
	}
	sum := f.PreadSecondsPerGiB + f.TCPSecondsPerGiB + f.PwriteSecondsPerGiB + f.SHA256SecondsPerGiB + f.SendfileSecondsPerGiB // SHA-1 is the library's
	if f.Bytes != 32<<20 || f.SecondsPerGiB <= 0 || math.Abs(sum-f.SecondsPerGiB) > 1e-9 {
		t.Fatalf("floor %+v: want 32 MiB moved, a positive total that is the sum of its steps (%v)", f, sum)
	}
	// Hashing 32 MiB twice cannot be free.
	if f.SHA1SecondsPerGiB+f.SHA256SecondsPerGiB <= 0 {
		t.Errorf("hashes measured no CPU: %+v", f)
	}
	if len(f.Exchanges) != len(exchangeBlocks) {
		t.Fatalf("exchanges %+v: want one per block size %v", f.Exchanges, exchangeBlocks)
	}
	for i, x := range f.Exchanges {
		if x.BlockBytes != exchangeBlocks[i] || x.SecondsPerGiB <= 0 || x.DeliveredSecondsPerGiB <= x.SecondsPerGiB {
			t.Errorf("exchange %+v: want %d-byte blocks, positive CPU, more with the delivery's steps", x, exchangeBlocks[i])
		}
	}
}

// The exchange floor moves the bytes it claims to: every block lands where
// it belongs, whatever connection carried it.
func TestExchangeCopiesEveryBlock(t *testing.T) {
	const blk, size = 32 << 10, 5 << 20
	dir := t.TempDir()
	want := make([]byte, size)
	rand.Read(want)
	src, err := os.Create(filepath.Join(dir, "src"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.Write(want); err != nil {
		t.Fatal(err)
	}
	dst, err := os.Create(filepath.Join(dir, "dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := exchange(context.Background(), src, dst, size, blk, 7, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("copy differs from the source (%d bytes, want %d)", len(got), len(want))
	}
	// A cancelled exchange returns rather than waiting out its blocks.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := exchange(ctx, src, dst, size, blk, 7, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled exchange: %v, want context.Canceled", err)
	}
}

// pullAll fails a copy that differs from the blob by one byte or is short.
func TestPullAllChecksEveryCopy(t *testing.T) {
	want, srv := copyServer(t)
	paths := []string{"/good", "/flipped", "/short"}
	_, _, fails := pullAll(context.Background(), len(paths), func(i int) string { return srv.URL + paths[i] }, want, 0)
	if len(fails) != 2 || !strings.Contains(strings.Join(fails, " "), "client 1") || !strings.Contains(strings.Join(fails, " "), "client 2") {
		t.Fatalf("fails = %q, want clients 1 (flipped byte) and 2 (short)", fails)
	}
}

// The scale set keeps N x R where 2 cores carry it (64 MB/s on 16 MiB,
// whose 32 KiB pieces cost the most per byte; 200 MB/s, the standard set's,
// on 64 MiB), runs every N cold and warm at U = R and U = 10 R on both, and
// runs the scenarios the same four ways, and its rows become the runs
// they describe.
func TestScaleSetRows(t *testing.T) {
	seen := map[string]bool{}
	for _, row := range ScaleSet {
		most := 64e6
		if row.Size >= 64<<20 {
			most = 200e6
		}
		if agg := float64(row.Agents) * float64(row.Rate); agg > most {
			t.Errorf("row %+v: N x R = %.0f B/s, over the %.0f MB/s 2 cores carry at this blob size", row, agg, most/1e6)
		}
		o := row.options("", nil)
		o.ApplyDefaults()
		if err := o.validateScenario(); err != nil {
			t.Errorf("row %+v: %v", row, err)
		}
		if want := float64(row.Rate) * max(row.OriginX, 1); float64(o.OriginRate) != want || o.UpstreamRate != o.OriginRate {
			t.Errorf("row %+v: origin %v, upstream %v, want both %v", row, o.OriginRate, o.UpstreamRate, want)
		}
		if o.WarmOrigins != row.Warm || o.SlowFraction != row.Slow || o.LateFraction != row.Late || o.ChurnFraction != row.Churn || o.SlowConns != row.SlowConns {
			t.Errorf("row %+v: options %+v", row, o)
		}
		seen[fmt.Sprintf("%d %s%s", row.Agents, row.Size, row.describe())] = true
	}
	for _, want := range []string{"64 16MiB", "64 16MiB, warm", "64 16MiB, U=10R", "64 16MiB, warm, U=10R", "128 16MiB", "256 16MiB, warm, U=10R",
		"64 16MiB, 0.25 slow", "64 16MiB, 0.25 slow (3 conns)", "64 16MiB, 0.25 late", "64 16MiB, 0.1 churn",
		"64 16MiB, warm, 0.25 slow", "64 16MiB, U=10R, 0.25 late", "64 16MiB, warm, U=10R, 0.1 churn",
		"64 64MiB", "128 64MiB, warm", "256 64MiB", "256 64MiB, warm, U=10R"} {
		if !seen[want] {
			t.Errorf("the scale set has no row %q (has %v)", want, seen)
		}
	}
}

// Plots of many rows wrap into lines of four panels, each titled with
// what sets its row apart.
func TestSVGWrapsPanels(t *testing.T) {
	var res Results
	for i := range 6 {
		res.Swarm = append(res.Swarm, &SwarmResult{Agents: 64, RateBps: 1e6, OriginRateBps: 10e6, BlobBytes: 16 << 20,
			WarmOrigins: i%2 == 0, TMinSeconds: 16.8, AgentSeconds: []float64{17, 18}})
	}
	svg := SVG(&res)
	if !strings.Contains(svg, `width="1440" height="500"`) {
		t.Errorf("6 panels should make 2 lines of 4 (1440 x 500):\n%.300s", svg)
	}
	if got := strings.Count(svg, "warm, U=10R"); got != 3 {
		t.Errorf("%d panels titled warm, U=10R, want 3", got)
	}
	if got := strings.Count(svg, `<g transform="translate(0 250)">`); got != 2 {
		t.Errorf("%d panels on the second line, want 2", got)
	}
}

// The client process pulls in a process of its own, checks every copy as
// pullOne does, cancels a pull when its context ends, and says what CPU
// it used.
func TestClientProcess(t *testing.T) {
	want, srv := copyServer(t)
	ctx, p := testClients(t, os.Stderr)
	if secs, ttfb, err := p.pull(ctx, srv.URL+"/good", want, 0); err != nil || secs <= 0 || ttfb <= 0 || ttfb > secs {
		t.Errorf("good copy: %v s, first byte %v s, %v", secs, ttfb, err)
	}
	for _, path := range []string{"/flipped", "/short"} {
		if _, _, err := p.pull(ctx, srv.URL+path, want, 0); err == nil || !strings.Contains(err.Error(), "CRC-32C") {
			t.Errorf("%s: %v, want a failed check", path, err)
		}
	}
	stuck, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, _, err := p.pull(stuck, srv.URL+"/stuck", want, 0); done <- err }()
	time.Sleep(100 * time.Millisecond)
	stop()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "canceled") {
			t.Errorf("cancelled pull: %v, want context canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled pull did not end")
	}
	cpu, err := p.close()
	if err != nil || cpu <= 0 {
		t.Errorf("close: %v core-s, %v", cpu, err)
	}
}

// A pull that goes stallAfter without a byte is counted, and the first one
// leaves both processes' goroutines and the kernel's TCP counters; a pull
// whose first byte came, however slow the rest, is not a stall.
func TestStalledPullIsDumped(t *testing.T) {
	want, srv := copyServer(t)
	ctx, p := testClients(t, os.Stderr)
	dir := filepath.Join(t.TempDir(), "stall")
	w := &stallWatch{dir: dir, log: slog.New(slog.DiscardHandler), clients: p}
	p.stallAfter, p.onStall = 300*time.Millisecond, w.stalled
	if err := w.start(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.pull(ctx, srv.URL+"/good", want, 0); err != nil {
		t.Fatal(err)
	}
	pulls := map[string]context.CancelFunc{}
	done := make(chan error, 2)
	for _, path := range []string{"/stuck", "/silent"} {
		pctx, stop := context.WithCancel(ctx)
		pulls[path] = stop
		go func() { _, _, err := p.pull(pctx, srv.URL+path, want, 0); done <- err }()
	}
	waitFor(t, 10*time.Second, "a stalled pull", func() bool { return w.count.Load() > 0 })
	waitFor(t, 10*time.Second, "the client process's dump", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "clients-goroutines.txt"))
		return bytes.Contains(b, []byte("serveClients"))
	})
	time.Sleep(500 * time.Millisecond) // a second stall, if /stuck were one, is told by now
	for _, stop := range pulls {
		stop()
	}
	for range pulls {
		<-done
	}
	if n := w.count.Load(); n != 1 {
		t.Errorf("%d stalled pulls, want 1 (/silent)", n)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "swarm-goroutines.txt")); !bytes.Contains(b, []byte("TestStalledPullIsDumped")) {
		t.Errorf("the harness's dump lacks the test's goroutine: %d bytes, %v", len(b), err)
	}
	if _, err := os.Stat("/proc/net/netstat"); err == nil {
		for _, f := range []string{"netstat-start", "netstat-stall", "snmp-stall"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Errorf("kernel counters: %v", err)
			}
		}
	}
	if _, err := p.close(); err != nil {
		t.Error(err)
	}
}

// A client process that is itself stuck (here stopped by SIGSTOP: a
// stalled scheduler would look the same from outside) still has its stall
// caught, by the harness's timer, and is dumped from outside: its threads'
// kernel state, then SIGQUIT for the runtime's own goroutine dump.
func TestStuckClientProcessIsDumpedFromOutside(t *testing.T) {
	want, srv := copyServer(t)
	var stderr bytes.Buffer // read once the process has ended
	ctx, p := testClients(t, &stderr)
	dir := t.TempDir()
	w := &stallWatch{dir: dir, log: slog.New(slog.DiscardHandler), clients: p}
	p.stallAfter, p.onStall = 200*time.Millisecond, w.stalled
	// Running first: stopped before its runtime set its signal handlers,
	// it would die of the SIGQUIT without a dump.
	if _, _, err := p.pull(ctx, srv.URL+"/good", want, 0); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, _, err := p.pull(ctx, srv.URL+"/good", want, 0); done <- err }()
	waitFor(t, 10*time.Second, "dump of the stuck client process", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "clients-stuck.txt"))
		return bytes.Contains(b, []byte("wchan"))
	})
	p.cmd.Process.Signal(syscall.SIGCONT) // the SIGQUIT sent meanwhile ends it
	select {
	case err := <-done:
		if err == nil {
			t.Error("the pull of a client process that got SIGQUIT succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the pull did not end after SIGQUIT")
	}
	if _, err := p.close(); err == nil || !strings.Contains(err.Error(), "exit status 2") {
		t.Errorf("close: %v, want the exit of the runtime's SIGQUIT dump (status 2)", err)
	}
	if !strings.Contains(stderr.String(), "SIGQUIT") || !strings.Contains(stderr.String(), "serveClients") {
		t.Errorf("the client process's stderr has no goroutine dump: %.300q", stderr.String())
	}
	if n := w.count.Load(); n != 1 {
		t.Errorf("%d stalled pulls, want 1", n)
	}
}

// testClients starts a client process, its stderr to stderr, and a
// context that ends with the test (or after 30 s) for its pulls.
func testClients(t *testing.T, stderr io.Writer) (context.Context, *clientProcess) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	p, err := startClients(ctx, stderr)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, p
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("no %s in %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// copyServer serves a 1 MiB blob (want checks it) as it is (/good), with a
// byte flipped (/flipped), a byte short (/short), and its first byte, then
// nothing until the client leaves (/stuck), or nothing at all (/silent).
func copyServer(t *testing.T) (copyCheck, *httptest.Server) {
	t.Helper()
	const size = 1 << 20
	want, err := randomBlobCheck(size, 1)
	if err != nil {
		t.Fatal(err)
	}
	blob, err := io.ReadAll(localregistry.NewRandomReader(size, 1))
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(blob)
	bad[size/2] ^= 1
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/good":
			w.Write(blob)
		case "/flipped":
			w.Write(bad)
		case "/short":
			w.Write(blob[:size-1])
		case "/stuck":
			w.Write(blob[:1])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case "/silent":
			<-r.Context().Done()
		}
	}))
	t.Cleanup(srv.Close)
	return want, srv
}
