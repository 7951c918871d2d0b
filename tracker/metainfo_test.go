package tracker_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/hashring"
	"github.com/shoal-dev/shoal/tracker"
)

// origin is a tiny real origin: it answers metainfo requests with a fixed
// bencoded body, or with the status it is told to, and counts requests.
type origin struct {
	*httptest.Server
	requests atomic.Int64
	status   int           // 0: 200 with the body
	release  chan struct{} // if set, answers wait until it is closed
	mu       sync.Mutex
	paths    []string // escaped request paths
}

func metainfoBody(d digest.Digest) []byte {
	name := d.String()
	return fmt.Appendf(nil, "d4:infod6:lengthi42e4:name%d:%s12:piece lengthi4194304e6:pieces20:%-20see", len(name), name, "x")
}

func startOrigin(t *testing.T, status int) *origin {
	o := &origin{status: status}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.requests.Add(1)
		o.mu.Lock()
		o.paths = append(o.paths, r.URL.EscapedPath())
		o.mu.Unlock()
		if o.release != nil {
			<-o.release
		}
		parts := strings.Split(r.URL.EscapedPath(), "/") // "", namespace, ns, blobs, digest, metainfo
		switch {
		case o.status == http.StatusNotFound:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}`)
		case o.status != 0:
			http.Error(w, "broken", o.status)
		case len(parts) != 6 || parts[1] != "namespace" || parts[3] != "blobs" || (parts[5] != "metainfo" && parts[5] != "torrent"):
			http.Error(w, "bad path", http.StatusTeapot)
		case parts[5] == "torrent":
			w.Header().Set("Content-Type", "application/x-bittorrent")
			_, _ = w.Write(torrentBody(t, digest.Digest(parts[4])))
		default:
			w.Header().Set("Content-Type", "application/x-bittorrent")
			_, _ = w.Write(metainfoBody(digest.Digest(parts[4])))
		}
	}))
	t.Cleanup(o.Close)
	return o
}

func testDigest(i int) digest.Digest { return digest.FromString(fmt.Sprint("blob ", i)) }

// digestOwnedBy finds a digest whose first origin on the ring is want.
func digestOwnedBy(t *testing.T, origins []string, want string) digest.Digest {
	ring := hashring.New(origins)
	for i := range 1000 {
		if d := testDigest(i); ring.Pick(d.String(), 0)[0] == want {
			return d
		}
	}
	t.Fatalf("no digest owned by %s", want)
	return ""
}

type ociError struct {
	Errors []struct{ Code, Message string } `json:"errors"`
}

func getMetainfo(t *testing.T, srv *tracker.Server, ns string, d string) (int, []byte, string) {
	t.Helper()
	resp, err := http.Get(srv.URL() + "/namespace/" + ns + "/blobs/" + d + "/metainfo")
	if err != nil {
		t.Fatalf("GET metainfo: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	code := ""
	if resp.StatusCode != http.StatusOK {
		var oe ociError
		if err := json.Unmarshal(body, &oe); err != nil || len(oe.Errors) == 0 {
			t.Fatalf("status %d with a body that is not OCI error JSON: %q", resp.StatusCode, body)
		}
		code = oe.Errors[0].Code
	} else if ct := resp.Header.Get("Content-Type"); ct != "application/x-bittorrent" {
		t.Fatalf("Content-Type = %q", ct)
	}
	return resp.StatusCode, body, code
}

// metricValue reports whether /metrics has line. It may run off the test
// goroutine, so it reports errors with t.Error.
func metricValue(t *testing.T, srv *tracker.Server, line string) bool {
	resp, err := http.Get(srv.URL() + "/metrics")
	if err != nil {
		t.Error(err)
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return strings.Contains(string(body), "\n"+line+"\n")
}

// 20 agents asking at once cause one origin request; the next 20 are served
// from the LRU with none.
func TestMetainfoCoalescedAndCached(t *testing.T) {
	o := startOrigin(t, 0)
	o.release = make(chan struct{})
	srv := startTracker(t, tracker.Config{Origins: []string{o.URL}})
	d := testDigest(1)

	const agents = 20
	round := func() {
		var wg sync.WaitGroup
		for range agents {
			wg.Go(func() {
				status, body, _ := getMetainfo(t, srv, "library%2Fubuntu", d.String())
				if status != http.StatusOK || string(body) != string(metainfoBody(d)) {
					t.Errorf("status %d body %q", status, body)
				}
			})
		}
		wg.Wait()
	}
	go func() {
		// Hold the origin until every agent waits on the one flight.
		defer close(o.release)
		deadline := time.Now().Add(10 * time.Second)
		for !metricValue(t, srv, "shoal_tracker_metainfo_waiting 20") {
			if time.Now().After(deadline) {
				t.Error("timed out waiting for 20 waiting metainfo requests")
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	round()
	if n := o.requests.Load(); n != 1 {
		t.Fatalf("first round: origin got %d requests, want 1", n)
	}
	round()
	if n := o.requests.Load(); n != 1 {
		t.Fatalf("second round: origin got %d requests, want still 1 (cache)", n)
	}
	if !metricValue(t, srv, `shoal_tracker_metainfo_requests_total{result="hit"} 20`) ||
		!metricValue(t, srv, `shoal_tracker_metainfo_requests_total{result="miss"} 20`) {
		t.Fatalf("metrics do not show 20 misses then 20 hits")
	}
}

// A dead or failing owner is skipped for the next origin on the ring.
func TestMetainfoFailover(t *testing.T) {
	for _, mode := range []string{"dead", "500"} {
		t.Run(mode, func(t *testing.T) {
			bad := startOrigin(t, http.StatusInternalServerError)
			good := startOrigin(t, 0)
			if mode == "dead" {
				bad.Close() // connection refused from now on
			}
			origins := []string{bad.URL, good.URL}
			d := digestOwnedBy(t, origins, bad.URL)
			srv := startTracker(t, tracker.Config{Origins: origins})
			status, body, _ := getMetainfo(t, srv, "library%2Fubuntu", d.String())
			if status != http.StatusOK || string(body) != string(metainfoBody(d)) {
				t.Fatalf("status %d body %q", status, body)
			}
			if good.requests.Load() != 1 {
				t.Fatalf("second origin got %d requests, want 1", good.requests.Load())
			}
			if mode == "500" && bad.requests.Load() != 1 {
				t.Fatalf("failing owner got %d requests, want 1 (asked first)", bad.requests.Load())
			}
		})
	}
}

// When every origin fails the agent gets a 502, and with none configured a 503.
func TestMetainfoNoOrigin(t *testing.T) {
	bad := startOrigin(t, http.StatusServiceUnavailable)
	srv := startTracker(t, tracker.Config{Origins: []string{bad.URL}})
	if status, _, code := getMetainfo(t, srv, "library%2Fubuntu", testDigest(1).String()); status != http.StatusBadGateway || code != "UNAVAILABLE" {
		t.Fatalf("all origins failing: %d %s, want 502 UNAVAILABLE", status, code)
	}
	empty := startTracker(t, tracker.Config{})
	if status, _, code := getMetainfo(t, empty, "library%2Fubuntu", testDigest(1).String()); status != http.StatusServiceUnavailable || code != "UNAVAILABLE" {
		t.Fatalf("no origins: %d %s, want 503 UNAVAILABLE", status, code)
	}
}

// An origin's 404 reaches the agent as 404 BLOB_UNKNOWN and is not cached.
func TestMetainfoNotFoundPassesThrough(t *testing.T) {
	o := startOrigin(t, http.StatusNotFound)
	srv := startTracker(t, tracker.Config{Origins: []string{o.URL}})
	for i := 1; i <= 2; i++ {
		status, _, code := getMetainfo(t, srv, "library%2Fubuntu", testDigest(1).String())
		if status != http.StatusNotFound || code != "BLOB_UNKNOWN" {
			t.Fatalf("got %d %s, want 404 BLOB_UNKNOWN", status, code)
		}
		if n := o.requests.Load(); n != int64(i) {
			t.Fatalf("origin requests = %d, want %d (errors are not cached)", n, i)
		}
	}
}

// Bad digests and namespaces are refused before any origin is asked.
func TestMetainfoBadInput(t *testing.T) {
	o := startOrigin(t, 0)
	srv := startTracker(t, tracker.Config{Origins: []string{o.URL}})
	good := testDigest(1).String()
	cases := []struct {
		ns, digest string
		code       string
	}{
		{"library%2Fubuntu", "sha256:abc", "DIGEST_INVALID"},
		{"library%2Fubuntu", "notadigest", "DIGEST_INVALID"},
		{"library%2Fubuntu", "sha256:" + strings.ToUpper(good[7:]), "DIGEST_INVALID"},
		{"library%2Fubuntu", "md5:d41d8cd98f00b204e9800998ecf8427e", "DIGEST_INVALID"},
		{"Library%2FUbuntu", good, "NAME_INVALID"},
		{"library%2F%2Fubuntu", good, "NAME_INVALID"},
		{"..%2Fetc", good, "NAME_INVALID"},
	}
	for _, tc := range cases {
		status, _, code := getMetainfo(t, srv, tc.ns, tc.digest)
		if status != http.StatusBadRequest || code != tc.code {
			t.Errorf("ns %s digest %s: got %d %s, want 400 %s", tc.ns, tc.digest, status, code, tc.code)
		}
	}
	if n := o.requests.Load(); n != 0 {
		t.Fatalf("origin got %d requests for bad input", n)
	}
}

// Escaped namespaces (with a registry host) reach the origin escaped the same way.
func TestMetainfoEscapedNamespace(t *testing.T) {
	o := startOrigin(t, 0)
	srv := startTracker(t, tracker.Config{Origins: []string{o.URL + "/"}})
	for i, ns := range []string{"ghcr.io%2Forg%2Fapp", "localhost:5000%2Fteam%2Fimg", "alpine"} {
		d := testDigest(10 + i)
		if status, body, _ := getMetainfo(t, srv, ns, d.String()); status != http.StatusOK || string(body) != string(metainfoBody(d)) {
			t.Fatalf("ns %s: status %d body %q", ns, status, body)
		}
		o.mu.Lock()
		got := o.paths[len(o.paths)-1]
		o.mu.Unlock()
		if want := "/namespace/" + ns + "/blobs/" + d.String() + "/metainfo"; got != want {
			t.Fatalf("origin saw path %q, want %q", got, want)
		}
	}
}
