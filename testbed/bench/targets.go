package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/agent"
	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/proto"
	"github.com/shoal-dev/shoal/testbed/cluster"
	"github.com/shoal-dev/shoal/testbed/localregistry"
	"github.com/shoal-dev/shoal/tracker"
)

const targetRepo = "bench/blob"

// startOne starts a registry, a tracker, one origin and one agent, and pushes
// a random blob of size bytes.
func startOne(ctx context.Context, dir string, size int64, agentRate, upstreamRate config.Rate, log *slog.Logger) (*cluster.Cluster, digest.Digest, copyCheck, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, err := cluster.Start(cluster.Options{Dir: dir, Agents: 1, Origins: 1, AgentRate: agentRate, UpstreamRate: upstreamRate, Log: log})
	if err != nil {
		return nil, "", copyCheck{}, err
	}
	d, err := c.Registry.PushRandomBlob(ctx, targetRepo, size, 1)
	if err != nil {
		_ = c.Close()
		return nil, "", copyCheck{}, err
	}
	want, err := randomBlobCheck(size, 1)
	if err != nil {
		_ = c.Close()
		return nil, "", copyCheck{}, err
	}
	return c, d, want, nil
}

func blobURL(base string, d digest.Digest) string {
	return proto.V2BlobURL(base, targetRepo, d)
}

// SingleOptions describe a cold single pull.
type SingleOptions struct {
	Size config.ByteSize
	// Rate caps the upstream registry's upload and the agent's link (and
	// the direct client); 0 = no cap.
	Rate config.Rate
	Dir  string
	Log  *slog.Logger
}

// SingleResult compares one cold pull through an agent with a direct pull.
type SingleResult struct {
	BlobBytes        int64   `json:"blob_bytes"`
	RateBps          int64   `json:"rate_bytes_per_second"`
	SingleSeconds    float64 `json:"single_seconds"`
	DirectSeconds    float64 `json:"direct_seconds"`
	SingleOverDirect float64 `json:"single_over_direct"`
	TTFBSeconds      float64 `json:"single_ttfb_seconds"`
	Verified         bool    `json:"verified"`
	CPUCores         int     `json:"cpu_cores"`
}

// Single times a cold pull through one agent of a fresh cluster, then the
// same blob pulled straight from the same registry (same cap).
func Single(ctx context.Context, o SingleOptions) (*SingleResult, error) {
	c, d, want, err := startOne(ctx, o.Dir, int64(o.Size), o.Rate, o.Rate, o.Log)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	r := &SingleResult{BlobBytes: int64(o.Size), RateBps: int64(o.Rate), CPUCores: runtime.NumCPU()}
	secs, ttfb, fails := pullAll(ctx, 1, func(int) string { return blobURL(c.Agents[0].URL(), d) }, want, 0)
	if len(fails) > 0 {
		return nil, fmt.Errorf("pull through the agent: %v", fails)
	}
	r.SingleSeconds, r.TTFBSeconds = secs[0], ttfb[0]
	dsecs, _, dfails := pullAll(ctx, 1, func(int) string { return blobURL(c.Registry.URL(), d) }, want, o.Rate)
	if len(dfails) > 0 {
		return nil, fmt.Errorf("direct pull: %v", dfails)
	}
	r.DirectSeconds = dsecs[0]
	r.SingleOverDirect = r.SingleSeconds / r.DirectSeconds
	r.Verified = true
	return r, nil
}

// WarmOptions describe a warm-pull run.
type WarmOptions struct {
	Size config.ByteSize
	Reps int // default 5
	Dir  string
	Log  *slog.Logger
}

// WarmResult compares an agent serving a cached blob with the registry.
type WarmResult struct {
	BlobBytes        int64     `json:"blob_bytes"`
	Reps             int       `json:"reps"`
	AgentBps         float64   `json:"agent_bytes_per_second"`
	RegistryBps      float64   `json:"registry_bytes_per_second"`
	WarmOverRegistry float64   `json:"warm_over_registry"`
	AgentSeconds     []float64 `json:"agent_seconds"`
	RegistrySeconds  []float64 `json:"registry_seconds"`
	RangeStatus      int       `json:"range_status"`
	RangeOK          bool      `json:"range_ok"`
	CPUCores         int       `json:"cpu_cores"`
}

// Warm caches the blob on the agent, then alternates GETs through the agent
// and straight from the registry (no caps) and compares median throughput.
func Warm(ctx context.Context, o WarmOptions) (*WarmResult, error) {
	if o.Reps <= 0 {
		o.Reps = 5
	}
	c, d, want, err := startOne(ctx, o.Dir, int64(o.Size), 0, 0, o.Log)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	agentURL, regURL := blobURL(c.Agents[0].URL(), d), blobURL(c.Registry.URL(), d)
	if _, _, fails := pullAll(ctx, 1, func(int) string { return agentURL }, want, 0); len(fails) > 0 {
		return nil, fmt.Errorf("first pull: %v", fails)
	}
	r := &WarmResult{BlobBytes: int64(o.Size), Reps: o.Reps, CPUCores: runtime.NumCPU()}
	for range o.Reps {
		for _, u := range []string{agentURL, regURL} {
			s, err := timedGet(ctx, u, int64(o.Size))
			if err != nil {
				return nil, err
			}
			if u == agentURL {
				r.AgentSeconds = append(r.AgentSeconds, s)
			} else {
				r.RegistrySeconds = append(r.RegistrySeconds, s)
			}
		}
	}
	r.AgentBps = float64(o.Size) / quantile(r.AgentSeconds, 0.5)
	r.RegistryBps = float64(o.Size) / quantile(r.RegistrySeconds, 0.5)
	r.WarmOverRegistry = r.AgentBps / r.RegistryBps
	r.RangeStatus, r.RangeOK, err = checkRange(ctx, agentURL, int64(o.Size))
	return r, err
}

// timedGet downloads url into io.Discard and checks the length.
func timedGet(ctx context.Context, url string, size int64) (float64, error) {
	t0 := time.Now()
	resp, err := httpGet(ctx, url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	n, err := io.CopyBuffer(io.Discard, resp.Body, make([]byte, 1<<20))
	if err != nil {
		return 0, err
	}
	if n != size {
		return 0, fmt.Errorf("GET %s: %d bytes, want %d", url, n, size)
	}
	return time.Since(t0).Seconds(), nil
}

// checkRange asks for a range in the middle of the blob and compares it
// with the generated bytes.
func checkRange(ctx context.Context, url string, size int64) (int, bool, error) {
	off := size / 3
	n := min(int64(100_000), size-off)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, false, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, false, err
	}
	want := make([]byte, n)
	g := localregistry.NewRandomReader(size, 1)
	if _, err := io.CopyN(io.Discard, g, off); err != nil {
		return 0, false, err
	}
	if _, err := io.ReadFull(g, want); err != nil {
		return 0, false, err
	}
	ok := resp.StatusCode == http.StatusPartialContent && resp.ContentLength == n && bytes.Equal(body, want)
	return resp.StatusCode, ok, nil
}

// MemoryOptions describe the agent memory run.
type MemoryOptions struct {
	Size config.ByteSize
	// Binary is the shoal executable run as `Binary agent --config FILE`.
	Binary string
	Dir    string
	Log    *slog.Logger
}

// MemoryResult is the separate agent process's memory while it streams.
type MemoryResult struct {
	BlobBytes             int64   `json:"blob_bytes"`
	AgentPrivatePeakBytes int64   `json:"agent_private_peak_bytes"`
	AgentRSSPeakBytes     int64   `json:"agent_rss_peak_bytes"`
	AgentPrivateIdleBytes int64   `json:"agent_private_idle_bytes"`
	Samples               int     `json:"samples"`
	PullSeconds           float64 `json:"pull_seconds"`
	Verified              bool    `json:"verified"`
}

// Memory runs an agent as its own process (pointed at an in-process
// registry, tracker and origin), streams the blob through it (cold) and
// samples its /proc/<pid>/status every 50 ms.
func Memory(ctx context.Context, o MemoryOptions) (_ *MemoryResult, err error) {
	c, d, want, err := startOne(ctx, o.Dir, int64(o.Size), 0, 0, o.Log)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ip := "127.0.0.250"
	ac := agent.Config{Root: filepath.Join(o.Dir, "agentproc"), Trackers: []string{c.Tracker.URL()},
		BuildIndex: []string{c.BuildIndex.URL()}, LogLevel: "warn"}
	for _, org := range c.Origins {
		ac.Origins = append(ac.Origins, org.URL())
	}
	for _, p := range []*string{&ac.Listen, &ac.AdminListen, &ac.P2P.Listen} {
		if *p, err = freeLoopback(ip); err != nil {
			return nil, err
		}
	}
	b, err := config.Encode(ac)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(o.Dir, "agentproc.toml")
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		return nil, err
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(pctx, o.Binary, "agent", "--config", cfgPath)
	var stderr tailBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start agent process: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cancel() // kills it
			<-exited
		}
		if err != nil {
			err = fmt.Errorf("%w (agent stderr: %s)", err, stderr.String())
		}
	}()
	base := "http://" + ac.Listen
	if err := waitUp(ctx, base+proto.PatternV2+"/", exited); err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	r := &MemoryResult{BlobBytes: int64(o.Size)}
	r.AgentPrivateIdleBytes, _ = procMem(pid)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			anon, rss := procMem(pid)
			r.AgentPrivatePeakBytes = max(r.AgentPrivatePeakBytes, anon)
			r.AgentRSSPeakBytes = max(r.AgentRSSPeakBytes, rss)
			r.Samples++
			select {
			case <-stop:
				return
			case <-tk.C:
			}
		}
	})
	secs, _, fails := pullAll(ctx, 1, func(int) string { return blobURL(base, d) }, want, 0)
	close(stop)
	wg.Wait()
	if len(fails) > 0 {
		return nil, fmt.Errorf("pull through the agent process: %v", fails)
	}
	r.PullSeconds, r.Verified = secs[0], true
	return r, nil
}

// procMem reads RssAnon and VmRSS of pid in bytes.
func procMem(pid int) (anon, rss int64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	kb := func(v string) int64 {
		n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		return n * 1024
	}
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "RssAnon:"); ok {
			anon = kb(v)
		} else if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			rss = kb(v)
		}
	}
	return anon, rss
}

func waitUp(ctx context.Context, url string, exited <-chan error) error {
	return waitUpWith(ctx, http.DefaultClient, url, exited)
}

func waitUpWith(ctx context.Context, hc *http.Client, url string, exited <-chan error) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("agent process exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if resp, err := httpGetWith(ctx, hc, url); err == nil {
			resp.Body.Close()
			return nil
		}
	}
	return errors.New("agent process did not come up in 30s")
}

func freeLoopback(ip string) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// tailBuffer keeps the last 4 KiB written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 4096 {
		t.buf = slices.Clone(t.buf[len(t.buf)-4096:])
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// TrackerResult is the tracker's announce rate on one core.
type TrackerResult struct {
	Announces          int     `json:"announces"`
	Seconds            float64 `json:"seconds"`
	AnnouncesPerSecond float64 `json:"announces_per_second"`
	P50Ms              float64 `json:"p50_ms"`
	P99Ms              float64 `json:"p99_ms"`
	MaxMs              float64 `json:"max_ms"`
	Peers              int     `json:"peers"`
	Swarms             int     `json:"swarms"`
	GOMAXPROCS         int     `json:"gomaxprocs"`
}

// Tracker calls the tracker's handler (in-memory store) from one goroutine
// with GOMAXPROCS 1 for d, with announces of 1000 peers over 16 swarms.
func Tracker(ctx context.Context, d time.Duration) (*TrackerResult, error) {
	srv, err := tracker.New(tracker.Config{Listen: "127.0.0.1:0"}, nil)
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	h := srv.Handler()
	const peers, swarms = 1000, 16
	reqs := make([]*http.Request, peers)
	for i := range reqs {
		var ih, id [20]byte
		copy(ih[:], fmt.Sprintf("swarm-%014d", i%swarms))
		copy(id[:], fmt.Sprintf("-SH0001-%012d", i))
		q := url.Values{}
		q.Set("info_hash", string(ih[:]))
		q.Set("peer_id", string(id[:]))
		q.Set("port", "6881")
		q.Set("uploaded", "0")
		q.Set("downloaded", "0")
		q.Set("left", strconv.Itoa((i%4)*1000)) // a quarter are seeders
		q.Set("compact", "1")
		reqs[i] = httptest.NewRequest(http.MethodGet, proto.PatternAnnounce+"?"+q.Encode(), nil).WithContext(ctx)
		reqs[i].RemoteAddr = fmt.Sprintf("10.0.%d.%d:6881", i/256, i%256)
	}
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	lat := make([]time.Duration, 0, 1<<20)
	t0 := time.Now()
	end := t0.Add(d)
	n := 0
	for ; n%1024 != 0 || time.Now().Before(end); n++ {
		rec := httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(rec, reqs[n%peers])
		l := time.Since(start)
		if len(lat) < cap(lat) {
			lat = append(lat, l)
		}
		if rec.Code != http.StatusOK || rec.Body.Len() < 50 || rec.Body.Bytes()[2] == 'f' {
			return nil, fmt.Errorf("announce: %d %q", rec.Code, rec.Body.Bytes())
		}
		if n%1024 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	secs := time.Since(t0).Seconds()
	slices.Sort(lat)
	ms := func(q float64) float64 { return float64(lat[min(int(q*float64(len(lat))), len(lat)-1)]) / 1e6 }
	return &TrackerResult{Announces: n, Seconds: secs, AnnouncesPerSecond: float64(n) / secs,
		P50Ms: ms(0.5), P99Ms: ms(0.99), MaxMs: ms(1), Peers: peers, Swarms: swarms, GOMAXPROCS: 1}, nil
}
