package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/testbed/cluster"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

// recorder is a proxy in front of the agent that notes every request's
// path and Range header.
type recorder struct {
	URL  string
	mu   sync.Mutex
	reqs []string
}

func newRecorder(t *testing.T, target string) *recorder {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.reqs = append(r.reqs, fmt.Sprintf("%s range=%q", req.URL.RequestURI(), req.Header.Get("Range")))
		r.mu.Unlock()
		proxy.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.reqs
	r.reqs = nil
	return out
}

// getFixture is one cluster with a two-platform index and a raw blob.
type getFixture struct {
	c        *cluster.Cluster
	host     string // the upstream registry
	index    v1.Hash
	images   map[string]v1.Image
	idx      v1.ImageIndex
	blob     []byte
	blobRef  string
	indexRef string
}

func startGetFixture(t *testing.T) *getFixture {
	t.Helper()
	c, err := cluster.Start(cluster.Options{Dir: t.TempDir(), Agents: 1, Origins: 1, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("cluster close: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := &getFixture{c: c, host: c.Registry.Host(), images: map[string]v1.Image{}}
	for i, arch := range []string{"amd64", "arm64"} {
		img, err := localregistry.ImageOfLayers(uint64(10*i), 300<<10, 200<<10)
		if err != nil {
			t.Fatal(err)
		}
		f.images[arch] = img
	}
	idx, err := localregistry.Index(f.images)
	if err != nil {
		t.Fatal(err)
	}
	f.idx = idx
	if f.index, err = idx.Digest(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Registry.PushIndex(ctx, "test/multi", "v1", idx); err != nil {
		t.Fatal(err)
	}
	f.indexRef = f.host + "/test/multi:v1"
	f.blob = localregistry.RandomBytes(3<<20+17, 7)
	d, err := c.Registry.PushBlob(ctx, "test/blob", f.blob)
	if err != nil {
		t.Fatal(err)
	}
	f.blobRef = f.host + "/test/blob@" + d.String()
	return f
}

// verifyLayout checks an OCI layout: every blob file matches its name,
// no partial file is left, and everything index.json reaches is there.
// It returns the number of blobs and index.json's descriptors.
func verifyLayout(t *testing.T, dir string) (int, []ocispec.Descriptor) {
	t.Helper()
	if b, err := os.ReadFile(filepath.Join(dir, "oci-layout")); err != nil || !strings.Contains(string(b), "1.0.0") {
		t.Errorf("oci-layout: %q, %v", b, err)
	}
	n := testutil.LayoutBlobs(t, dir)
	var idx ocispec.Index
	readJSON(t, filepath.Join(dir, "index.json"), &idx)
	var walk func(d ocispec.Descriptor)
	walk = func(d ocispec.Descriptor) {
		p := filepath.Join(dir, "blobs", "sha256", d.Digest.Encoded())
		fi, err := os.Stat(p)
		if err != nil || fi.Size() != d.Size {
			t.Errorf("%s %s: missing or wrong size: %v", d.MediaType, d.Digest, err)
			return
		}
		if !strings.Contains(d.MediaType, "manifest") && !strings.Contains(d.MediaType, "index") {
			return
		}
		var m struct {
			ocispec.Manifest
			Manifests []ocispec.Descriptor `json:"manifests"`
		}
		readJSON(t, p, &m)
		for _, c := range append(append(m.Manifests, m.Config), m.Layers...) {
			if c.Digest != "" {
				walk(c)
			}
		}
	}
	for _, d := range idx.Manifests {
		walk(d)
	}
	return n, idx.Manifests
}

func readJSON(t *testing.T, p string, v any) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}

func blobLines(out string) int {
	return strings.Count(out, " bytes downloaded\n") + strings.Count(out, " bytes present\n")
}

func TestGet(t *testing.T) {
	f := startGetFixture(t)
	agentURL := f.c.Agents[0].URL()

	t.Run("IndexEveryPlatform", func(t *testing.T) {
		dir := t.TempDir()
		code, out, stderr := shoal(t, "get", "--agent", agentURL, f.indexRef, "-o", dir)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		n, roots := verifyLayout(t, dir)
		// index + 2 x (manifest, config, 2 layers)
		if n != 9 {
			t.Errorf("layout holds %d blobs, want 9", n)
		}
		if len(roots) != 1 || roots[0].Digest.String() != f.index.String() || roots[0].MediaType != ocispec.MediaTypeImageIndex {
			t.Errorf("index.json = %+v, want the index %s", roots, f.index)
		}
		if roots[0].Annotations[ocispec.AnnotationRefName] != "v1" {
			t.Errorf("index.json names %v, want v1", roots[0].Annotations)
		}
		if got := blobLines(out); got != 9 {
			t.Errorf("%d blob lines, want 9:\n%s", got, out)
		}
		if !strings.Contains(out, "total: 9 blobs") {
			t.Errorf("no total line:\n%s", out)
		}
		// Again: every config and layer is present and verified (the
		// manifests are asked again: a tag may have moved).
		code, out, stderr = shoal(t, "get", "--agent", agentURL, f.indexRef, "-o", dir)
		if code != 0 || strings.Count(out, " bytes present\n") != 6 {
			t.Errorf("second get: exit %d, want 6 layers and configs present:\n%s%s", code, out, stderr)
		}
	})

	t.Run("IndexOnePlatform", func(t *testing.T) {
		dir := t.TempDir()
		code, out, stderr := shoal(t, "get", "--agent", agentURL, "--platform", "linux/arm64", "-o", dir, f.indexRef)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		n, roots := verifyLayout(t, dir)
		im, err := f.idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		want := im.Manifests[1].Digest // sorted: amd64, arm64
		if n != 4 {
			t.Errorf("layout holds %d blobs, want 4 (manifest, config, 2 layers):\n%s", n, out)
		}
		if len(roots) != 1 || roots[0].Digest.String() != want.String() || roots[0].Platform == nil || roots[0].Platform.Architecture != "arm64" {
			t.Errorf("index.json = %+v, want the arm64 manifest %s", roots, want)
		}
		code, _, stderr = shoal(t, "get", "--agent", agentURL, "--platform", "windows/386", "-o", t.TempDir(), f.indexRef)
		if code == 0 || !strings.Contains(stderr, "no manifest for platform windows/386") {
			t.Errorf("missing platform: exit %d: %s", code, stderr)
		}
	})

	t.Run("Blob", func(t *testing.T) {
		rec := newRecorder(t, agentURL)
		out := filepath.Join(t.TempDir(), "blob")
		code, stdout, stderr := shoal(t, "get", "--agent", rec.URL, "--blob", "-o", out, f.blobRef)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		checkFile(t, out, f.blob)
		if !strings.Contains(stdout, fmt.Sprintf(" %d bytes downloaded\n", len(f.blob))) {
			t.Errorf("stdout:\n%s", stdout)
		}
		rec.take()
		// A complete file is verified and kept: no request.
		if code, stdout, _ := shoal(t, "get", "--agent", rec.URL, "--blob", "-o", out, f.blobRef); code != 0 || !strings.Contains(stdout, "present") {
			t.Errorf("second get: exit %d:\n%s", code, stdout)
		}
		if reqs := rec.take(); len(reqs) != 0 {
			t.Errorf("a present blob was asked for: %v", reqs)
		}
	})

	t.Run("Resume", func(t *testing.T) {
		rec := newRecorder(t, agentURL)
		out := filepath.Join(t.TempDir(), "blob")
		const n = 1<<20 + 3
		if err := os.WriteFile(out+".partial", f.blob[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := shoal(t, "get", "--agent", rec.URL, "--blob", "-o", out, f.blobRef)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		checkFile(t, out, f.blob)
		reqs := rec.take()
		if len(reqs) != 1 || !strings.Contains(reqs[0], fmt.Sprintf(`range="bytes=%d-"`, n)) {
			t.Errorf("requests %v, want one from byte %d", reqs, n)
		}
		if !strings.Contains(stdout, fmt.Sprintf("resumed from byte %d", n)) {
			t.Errorf("stdout:\n%s", stdout)
		}
	})

	t.Run("CorruptPartial", func(t *testing.T) {
		rec := newRecorder(t, agentURL)
		out := filepath.Join(t.TempDir(), "blob")
		bad := bytes.Clone(f.blob[:2<<20])
		bad[12345] ^= 0xff
		if err := os.WriteFile(out+".partial", bad, 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := shoal(t, "get", "--agent", rec.URL, "--blob", "-o", out, f.blobRef)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		checkFile(t, out, f.blob)
		reqs := rec.take()
		if len(reqs) != 2 || !strings.Contains(reqs[0], `range="bytes=2097152-"`) || !strings.Contains(reqs[1], `range=""`) {
			t.Errorf("requests %v, want a resume then a whole download", reqs)
		}
	})

	t.Run("Terminal", func(t *testing.T) {
		ptmx, tty, err := pty.Open()
		if err != nil {
			t.Skipf("no pseudo-terminal: %v", err)
		}
		t.Cleanup(func() { ptmx.Close(); tty.Close() })
		if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 40, Cols: 120}); err != nil {
			t.Fatal(err)
		}
		var screen bytes.Buffer
		read := make(chan struct{})
		go func() {
			defer close(read)
			_, _ = io.Copy(&screen, ptmx) // ends when the tty closes
		}()
		var errb bytes.Buffer
		code := run([]string{"get", "--agent", agentURL, "-o", t.TempDir(), f.indexRef}, tty, &errb)
		tty.Close()
		select {
		case <-read:
		case <-time.After(10 * time.Second):
			t.Fatal("the terminal output did not end")
		}
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		out := screen.String()
		if !strings.Contains(out, "total ") || !strings.Contains(out, "[=====") || !strings.Contains(out, "100 %") {
			t.Errorf("no progress bar on the terminal:\n%q", out)
		}
		if strings.Contains(out, " bytes downloaded") {
			t.Errorf("plain lines on a terminal:\n%q", out)
		}
	})

	t.Run("Errors", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			args []string
			code int
			want string
		}{
			{"bad reference", []string{"get", "--agent", agentURL, "-o", t.TempDir(), "Not A/Ref::"}, 2, "bad reference"},
			{"missing tag", []string{"get", "--agent", agentURL, "-o", t.TempDir(), f.host + "/test/multi:nope"}, 1, "MANIFEST_UNKNOWN"},
			{"unknown blob", []string{"get", "--agent", agentURL, "--blob", "-o", filepath.Join(t.TempDir(), "b"),
				f.host + "/test/blob@sha256:" + strings.Repeat("ab", 32)}, 1, "BLOB_UNKNOWN"},
			{"blob by tag", []string{"get", "--agent", agentURL, "--blob", "-o", filepath.Join(t.TempDir(), "b"), f.indexRef}, 2, "by digest"},
			{"agent unreachable", []string{"get", "--agent", "http://127.0.0.1:1", "-o", t.TempDir(), f.indexRef}, 1, "connection refused"},
			{"no output", []string{"get", "--agent", agentURL, f.indexRef}, 2, "-o is required"},
		} {
			code, _, stderr := shoal(t, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Errorf("%s: exit %d (want %d), stderr %q does not say %q", tc.name, code, tc.code, stderr, tc.want)
			}
		}
	})
}

func checkFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: %d bytes that do not match the %d wanted", path, len(got), len(want))
	}
	if _, err := os.Stat(path + ".partial"); err == nil {
		t.Errorf("%s.partial left behind", path)
	}
}
