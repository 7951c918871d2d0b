package agent

// A pull and its HTTP fallback without a cluster: a real store on a temp
// dir, real HTTP origins and a real upstream registry (httptest), and fakes
// only for the faults a real swarm cannot be made to show on demand: a
// tracker that does not answer, a swarm that stalls after a verified
// prefix, a swarm that fails to start.

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/shoal-dev/shoal/internal/hashring"
	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/internal/store"
	"github.com/shoal-dev/shoal/internal/upstream"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

const testRepo = "test/app"

// testBlob is a blob with its live metainfo and piece hashes.
type testBlob struct {
	data []byte
	d    digest.Digest
	mi   *p2p.MetaInfo
	sums []byte
}

func newTestBlob(t *testing.T, size int64, seed uint64) testBlob {
	t.Helper()
	data := localregistry.RandomBytes(size, seed)
	d := digest.FromBytes(data)
	pl := p2p.PieceLengthFor(size)
	raw, err := p2p.BuildMetaInfo(d, size, pl)
	if err != nil {
		t.Fatal(err)
	}
	mi, err := p2p.ParseMetaInfo(raw, d)
	if err != nil {
		t.Fatal(err)
	}
	hashes, err := p2p.HashesOf(bytes.NewReader(data), size, pl)
	if err != nil {
		t.Fatal(err)
	}
	return testBlob{data: data, d: d, mi: mi, sums: hashes.Sums()}
}

// fakeMeta stands in for the trackers.
type fakeMeta struct {
	mi  *p2p.MetaInfo
	err error
}

func (m fakeMeta) get(context.Context, string, digest.Digest) (*p2p.MetaInfo, error) {
	return m.mi, m.err
}

// stallingSwarms join a swarm that delivers the first prefix bytes of
// blob, verified, and then nothing more.
type stallingSwarms struct {
	blob   []byte
	prefix int64
}

func (s stallingSwarms) Download(_ *p2p.MetaInfo, dl *store.Download, _ *p2p.PieceHashes) (swarmDownload, error) {
	if _, err := dl.WriteAt(s.blob[:s.prefix], 0); err != nil {
		return nil, err
	}
	if err := dl.Advance(s.prefix); err != nil {
		return nil, err
	}
	return &stalledSwarm{dl: dl, n: s.prefix}, nil
}

type stalledSwarm struct {
	dl   *store.Download
	n    int64
	once sync.Once
}

func (s *stalledSwarm) BytesCompleted() int64 { return s.n }

// Close releases the download's reference, which Download took over.
func (s *stalledSwarm) Close() { s.once.Do(s.dl.Release) }

// failingSwarms cannot join any swarm.
type failingSwarms struct{}

func (failingSwarms) Download(*p2p.MetaInfo, *store.Download, *p2p.PieceHashes) (swarmDownload, error) {
	return nil, errors.New("fake swarm: cannot join")
}

// originMode is how a fake origin answers blob GETs (piece hashes it
// always serves).
type originMode int

const (
	serves  originMode = iota // the blob, with Range
	down                      // 500 UNAVAILABLE
	denies                    // 403 DENIED: a registry the origins refuse
	unknown                   // 404 BLOB_UNKNOWN
	cutsOff                   // half of what was asked, then the connection breaks
	corrupt                   // wrong bytes
	gone                      // not listening
)

// fakeOrigin is an origin's HTTP endpoints for one blob.
type fakeOrigin struct {
	mode originMode
	blob testBlob

	mu    sync.Mutex
	froms []int64 // where each blob GET asked to start
}

func (o *fakeOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/pieces") {
		from, _ := strconv.Atoi(r.URL.Query().Get("from"))
		w.Header().Set(p2p.HeaderPieceLength, strconv.FormatInt(o.blob.mi.Info.PieceLength, 10))
		_, _ = w.Write(o.blob.sums[from*sha1.Size:])
		return
	}
	if r.URL.Path != fmt.Sprintf("/namespace/%s/blobs/%s", strings.ReplaceAll(testRepo, "/", "%2F"), o.blob.d) &&
		r.URL.Path != fmt.Sprintf("/namespace/%s/blobs/%s", testRepo, o.blob.d) {
		ociError(w, http.StatusNotFound, "NAME_UNKNOWN", "no such endpoint "+r.URL.Path)
		return
	}
	from := rangeStart(r)
	o.mu.Lock()
	o.froms = append(o.froms, from)
	o.mu.Unlock()
	switch o.mode {
	case serves:
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(o.blob.data))
	case down:
		ociError(w, http.StatusInternalServerError, "UNAVAILABLE", "origin down")
	case denies:
		ociError(w, http.StatusForbidden, "DENIED", "registry other.test is not configured")
	case unknown:
		ociError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown to the upstream registry")
	case cutsOff:
		rest := o.blob.data[from:]
		w.Header().Set("Content-Length", strconv.Itoa(len(rest)))
		if from > 0 {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, len(o.blob.data)-1, len(o.blob.data)))
			w.WriteHeader(http.StatusPartialContent)
		}
		_, _ = w.Write(rest[:len(rest)/2]) // short of Content-Length: the server closes the connection
	case corrupt:
		bad := bytes.Clone(o.blob.data)
		bad[len(bad)-1] ^= 0xff
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(bad))
	}
}

func (o *fakeOrigin) asked() []int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]int64(nil), o.froms...)
}

// fakeUpstream is a Registry v2 server holding one blob.
type fakeUpstream struct {
	blob testBlob

	mu    sync.Mutex
	froms []int64
}

func (u *fakeUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/v2/":
		_, _ = w.Write([]byte("{}"))
	case fmt.Sprintf("/v2/%s/blobs/%s", testRepo, u.blob.d):
		u.mu.Lock()
		u.froms = append(u.froms, rangeStart(r))
		u.mu.Unlock()
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(u.blob.data))
	default:
		ociError(w, http.StatusNotFound, "BLOB_UNKNOWN", "unknown")
	}
}

func (u *fakeUpstream) asked() []int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]int64(nil), u.froms...)
}

func rangeStart(r *http.Request) int64 {
	var from int64
	if h := r.Header.Get("Range"); h != "" {
		_, _ = fmt.Sscanf(h, "bytes=%d-", &from)
	}
	return from
}

func ociError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

func testLogger() *slog.Logger {
	if os.Getenv("SHOAL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startTestAgent runs an agent whose tracker and swarm are meta and swarms.
func startTestAgent(t *testing.T, origins []string, up *httptest.Server, meta metainfoSource, swarms swarmJoiner) *Agent {
	t.Helper()
	// Announces (of the blob seeded after a fallback) go nowhere.
	tracker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(tracker.Close)
	cfg := Config{Root: t.TempDir(), Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
		Trackers: []string{tracker.URL}, Origins: origins, StallTimeout: time.Second, PullGrace: 50 * time.Millisecond}
	if up != nil {
		cfg.Upstreams = []upstream.Config{{Host: "registry.test", URL: up.URL}}
	}
	cfg.ApplyDefaults()
	cfg.P2P.Listen = "127.0.0.1:0"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := New(cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	a.meta, a.swarms = meta, swarms
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		// Let the pull end first: it may be joining the swarms of the
		// blob it just stored, which a closing node does not expect.
		deadline := time.Now().Add(10 * time.Second)
		for a.pullCount() > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	return a
}

func (a *Agent) pullCount() int { return a.pulls.Len() }

// getBlob pulls d from the agent: the status, the body and whether reading
// it failed.
func getBlob(t *testing.T, a *Agent, d digest.Digest) (int, []byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL()+"/v2/"+testRepo+"/blobs/"+d.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// waitNothingLeft polls until the failed download of d has left no file.
func waitNothingLeft(t *testing.T, a *Agent, d digest.Digest) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left, _ := filepath.Glob(filepath.Join(a.store.Root(), "downloads", "*"))
		_, serr := a.store.Stat(d)
		if len(left) == 0 && serr != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a failed pull: downloads %v, stored blob err %v", left, serr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFallback runs each arrangement of origins both ways the fallback
// starts: no tracker answers (a new download from byte 0), and the swarm
// stalls after a verified prefix (the rest from that prefix on).
func TestFallback(t *testing.T) {
	blob := newTestBlob(t, 3<<19, 7) // 1.5 MiB: six 256 KiB pieces
	prefix := 2 * blob.mi.Info.PieceLength
	half := func(from int64) int64 { return from + (int64(len(blob.data))-from)/2 }
	cases := []struct {
		name     string
		origins  []originMode // in ring order
		upstream bool
		// want is where each origin (ring order) and then the upstream
		// were asked to start, given where the fallback started.
		want func(start int64) [][]int64
		// status and code of a download that failed before it existed;
		// 0: the response breaks off (it started before the failure, as
		// every resumed one has).
		status  int
		code    string
		down    float64 // shoal_agent_fallbacks_total{reason="origins_down"}
		success bool
	}{
		{name: "first healthy origin", origins: []originMode{down, serves, serves}, upstream: true,
			want:    func(s int64) [][]int64 { return [][]int64{{s}, {s}, nil, nil} },
			success: true},
		{name: "4xx DENIED is final", origins: []originMode{denies, serves}, upstream: true,
			want:   func(s int64) [][]int64 { return [][]int64{{s}, nil, nil} },
			status: http.StatusForbidden, code: "DENIED"},
		{name: "4xx BLOB_UNKNOWN is final", origins: []originMode{down, unknown, serves}, upstream: true,
			want:   func(s int64) [][]int64 { return [][]int64{{s}, {s}, nil, nil} },
			status: http.StatusNotFound, code: "BLOB_UNKNOWN"},
		{name: "every origin 5xx, then upstream", origins: []originMode{down, down}, upstream: true,
			want:    func(s int64) [][]int64 { return [][]int64{{s}, {s}, {s}} },
			down:    1,
			success: true},
		{name: "every origin gone, no upstream", origins: []originMode{gone, gone},
			want:   func(s int64) [][]int64 { return [][]int64{nil, nil} },
			status: http.StatusBadGateway, code: "UNAVAILABLE"},
		{name: "every origin 5xx, no upstream: an origin's own error", origins: []originMode{down, down},
			want:   func(s int64) [][]int64 { return [][]int64{{s}, {s}} },
			status: http.StatusInternalServerError, code: "UNAVAILABLE"},
		{name: "broken body resumes on the next origin", origins: []originMode{cutsOff, serves}, upstream: true,
			want:    func(s int64) [][]int64 { return [][]int64{{s}, {half(s)}, nil} },
			success: true},
		{name: "broken bodies, then upstream from the prefix", origins: []originMode{cutsOff, cutsOff}, upstream: true,
			want:    func(s int64) [][]int64 { return [][]int64{{s}, {half(s)}, {half(half(s))}} },
			down:    1,
			success: true},
		{name: "wrong bytes are never patched", origins: []originMode{corrupt, serves}, upstream: true,
			want: func(s int64) [][]int64 { return [][]int64{{s}, nil, nil} }},
	}
	for _, start := range []string{"tracker down", "swarm stalled"} {
		for _, tc := range cases {
			t.Run(start+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				origins := make([]*fakeOrigin, len(tc.origins))
				urls := make([]string, len(tc.origins))
				servers := map[string]*httptest.Server{}
				for i := range origins {
					origins[i] = &fakeOrigin{blob: blob}
					srv := httptest.NewServer(origins[i])
					t.Cleanup(srv.Close)
					urls[i] = srv.URL
					servers[srv.URL] = srv
				}
				// Give the modes to the origins in the order the ring
				// asks them for this blob.
				byURL := map[string]*fakeOrigin{}
				for i, u := range urls {
					byURL[u] = origins[i]
				}
				ring := hashring.New(urls).Pick(blob.d.String(), 0)
				for i, u := range ring {
					origins[i] = byURL[u]
					origins[i].mode = tc.origins[i]
					if tc.origins[i] == gone {
						servers[u].Close()
					}
				}
				up := &fakeUpstream{blob: blob}
				var upSrv *httptest.Server
				if tc.upstream {
					upSrv = httptest.NewServer(up)
					t.Cleanup(upSrv.Close)
				}
				var a *Agent
				from := int64(0)
				if start == "tracker down" {
					a = startTestAgent(t, urls, upSrv, fakeMeta{err: errors.New("fake tracker: connection refused")}, failingSwarms{})
				} else {
					from = prefix
					a = startTestAgent(t, urls, upSrv, fakeMeta{mi: blob.mi}, stallingSwarms{blob: blob.data, prefix: prefix})
				}

				status, body, rerr := getBlob(t, a, blob.d)
				switch {
				case tc.success:
					if status != http.StatusOK || rerr != nil || !bytes.Equal(body, blob.data) {
						t.Fatalf("GET: status %d, %d bytes (read error %v), want 200 and the %d-byte blob", status, len(body), rerr, len(blob.data))
					}
				case tc.status != 0 && from == 0:
					var oe ociErrors
					_ = json.Unmarshal(body, &oe)
					if status != tc.status || len(oe.Errors) == 0 || oe.Errors[0].Code != tc.code {
						t.Fatalf("GET: status %d, body %s; want %d %s", status, body, tc.status, tc.code)
					}
					t.Logf("client sees %d %s", status, body)
				default:
					if rerr == nil && bytes.Equal(body, blob.data) {
						t.Fatalf("GET: status %d and the whole blob, want the response to break off", status)
					}
				}
				if !tc.success {
					waitNothingLeft(t, a, blob.d)
				}

				want := tc.want(from)
				for i, o := range origins {
					if got := o.asked(); fmt.Sprint(got) != fmt.Sprint(want[i]) {
						t.Errorf("origin %d in ring order (%v) asked from %v, want %v", i, tc.origins[i], got, want[i])
					}
				}
				if got := up.asked(); tc.upstream && fmt.Sprint(got) != fmt.Sprint(want[len(origins)]) {
					t.Errorf("upstream asked from %v, want %v", got, want[len(origins)])
				}
				if got := counterValue(t, a.fallbacks.WithLabelValues("origins_down")); got != tc.down {
					t.Errorf("fallbacks{origins_down} = %v, want %v", got, tc.down)
				}
				reason := "tracker_unreachable"
				if from > 0 {
					reason = "swarm_stalled"
				}
				if got := counterValue(t, a.fallbacks.WithLabelValues(reason)); got != 1 {
					t.Errorf("fallbacks{%s} = %v, want 1", reason, got)
				}
			})
		}
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

type ociErrors struct {
	Errors []struct{ Code, Message string } `json:"errors"`
}

// TestSwarmThatFailsToStart: the client gets a 502 and no file is left.
func TestSwarmThatFailsToStart(t *testing.T) {
	blob := newTestBlob(t, 1<<20, 8)
	o := &fakeOrigin{blob: blob}
	srv := httptest.NewServer(o)
	t.Cleanup(srv.Close)
	a := startTestAgent(t, []string{srv.URL}, nil, fakeMeta{mi: blob.mi}, failingSwarms{})
	status, body, _ := getBlob(t, a, blob.d)
	var oe ociErrors
	_ = json.Unmarshal(body, &oe)
	if status != http.StatusBadGateway || len(oe.Errors) == 0 || oe.Errors[0].Code != "UNAVAILABLE" {
		t.Fatalf("GET: status %d, body %s; want 502 UNAVAILABLE", status, body)
	}
	waitNothingLeft(t, a, blob.d)
	if got := o.asked(); len(got) != 0 {
		t.Errorf("a swarm that fails to start is not a stall: origin asked for the blob from %v", got)
	}
}
