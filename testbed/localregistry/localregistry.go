// Package localregistry runs a real CNCF distribution registry (used as a
// library, filesystem storage) on a loopback address, counting the blob GETs
// it answers: the upstream of `shoal demo`, `shoal bench` and the tests.
package localregistry

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"sync"
	"sync/atomic"

	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // storage driver
	"golang.org/x/time/rate"

	"github.com/shoal-dev/shoal/internal/httpx"
)

// Registry is a running registry.
type Registry struct {
	srv     *httpx.Server
	handler http.Handler

	mu        sync.Mutex
	blobGets  map[string]int // digest -> GET count
	sent      atomic.Int64
	limiter   *rate.Limiter
	down      atomic.Bool
	fault     atomic.Int32 // HTTP status forced on every answer (0: none)
	manifests manifestCounts
}

var blobPath = regexp.MustCompile(`^/v2/.+/blobs/(sha256:[a-f0-9]{64})$`)

// Start serves a registry storing into dir on addr ("127.0.0.1:0").
// uploadRate, if > 0, caps the bytes per second it sends in all.
func Start(dir, addr string, uploadRate int64, log *slog.Logger) (*Registry, error) {
	return StartWithOptions(dir, addr, Options{UploadRate: uploadRate}, log)
}

// ServeHTTP counts blob GETs and applies the upload cap.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if code := r.fault.Load(); code != 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(int(code))
		fmt.Fprintf(w, `{"errors":[{"code":"UNKNOWN","message":"injected fault %d"}]}`, code)
		return
	}
	if r.down.Load() {
		// Simulate an outage: drop the connection without an answer.
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return
			}
		}
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	r.manifests.observe(req)
	if m := blobPath.FindStringSubmatch(req.URL.Path); m != nil && req.Method == http.MethodGet {
		r.mu.Lock()
		r.blobGets[m[1]]++
		r.mu.Unlock()
	}
	r.handler.ServeHTTP(&meteredWriter{ResponseWriter: w, r: r, ctx: req.Context()}, req)
}

// Serve runs until ctx ends.
func (r *Registry) Serve(ctx context.Context) error { return r.srv.Serve(ctx) }

// URL is "http://127.0.0.1:port".
func (r *Registry) URL() string { return r.srv.URL() }

// Host is "127.0.0.1:port", as image references name it.
func (r *Registry) Host() string { return r.srv.Addr() }

// BlobGets returns how many times blob d was fetched with GET.
func (r *Registry) BlobGets(d string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.blobGets[d]
}

// TotalBlobGets sums BlobGets over every blob.
func (r *Registry) TotalBlobGets() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.blobGets {
		n += c
	}
	return n
}

// ResetCounts zeroes the counters (after loading an image, say).
func (r *Registry) ResetCounts() {
	r.mu.Lock()
	r.blobGets = map[string]int{}
	r.mu.Unlock()
	r.manifests.reset()
	r.sent.Store(0)
}

// BytesSent counts response body bytes.
func (r *Registry) BytesSent() int64 { return r.sent.Load() }

// SetFault makes the registry answer every request with status (a 500, a
// 401...), or serve normally again with 0: faults a healthy registry never
// produces on its own.
func (r *Registry) SetFault(status int) { r.fault.Store(int32(status)) }

// SetDown makes the registry drop every connection (true) or serve again.
func (r *Registry) SetDown(down bool) { r.down.Store(down) }

type meteredWriter struct {
	http.ResponseWriter
	r   *Registry
	ctx context.Context
}

func (w *meteredWriter) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		chunk := p
		if w.r.limiter != nil {
			chunk = p[:min(len(p), w.r.limiter.Burst())]
			if err := w.r.limiter.WaitN(w.ctx, len(chunk)); err != nil {
				return total, err
			}
		}
		n, err := w.ResponseWriter.Write(chunk)
		total += n
		w.r.sent.Add(int64(n))
		if err != nil {
			return total, err
		}
		p = p[n:]
	}
	return total, nil
}

func (w *meteredWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
