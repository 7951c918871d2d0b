package fetch

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/testutil"
)

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Ref
		bad  bool
	}{
		{in: "ghcr.io/org/app:v1", want: Ref{"ghcr.io", "org/app", "v1"}},
		{in: "127.0.0.1:5000/a/b@sha256:" + strings.Repeat("0", 64), want: Ref{"127.0.0.1:5000", "a/b", "sha256:" + strings.Repeat("0", 64)}},
		{in: "ubuntu:24.04", want: Ref{"docker.io", "library/ubuntu", "24.04"}},
		{in: "Not A/Ref::", bad: true},
		{in: "r.io/a@sha256:12", bad: true},
	} {
		got, err := ParseRef(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("%q: no error, got %+v", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestParsePlatform(t *testing.T) {
	if p, err := ParsePlatform("linux/arm/v7"); err != nil || p != (Platform{"linux", "arm", "v7"}) {
		t.Errorf("linux/arm/v7 = %+v, %v", p, err)
	}
	for _, s := range []string{"linux", "/amd64", "a/b/c/d"} {
		if _, err := ParsePlatform(s); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
}

// countingProgress checks that every blob ends once, from several
// goroutines at a time.
type countingProgress struct {
	mu   sync.Mutex
	done map[digest.Digest]string
}

type countingBlob struct {
	p *countingProgress
	d digest.Digest
}

func (p *countingProgress) Blob(d digest.Digest, _ int64) BlobProgress { return countingBlob{p, d} }
func (countingBlob) Start(int64)                                       {}
func (countingBlob) Add(int)                                           {}
func (countingBlob) Restart()                                          {}
func (b countingBlob) Done(state string, err error) {
	b.p.mu.Lock()
	defer b.p.mu.Unlock()
	b.p.done[b.d] = state
}

// TestLayoutOfAnArtifactAndAnIndex downloads, with parallel blobs, an
// artifact of arbitrary media types and a random index from a plain
// in-memory registry, and checks each layout blob by blob.
func TestLayoutOfAnArtifactAndAnIndex(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	art := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), "application/vnd.example.model.config.v1+json")
	art, err := mutate.AppendLayers(art,
		static.NewLayer([]byte(strings.Repeat("weights", 100000)), "application/vnd.example.model.weights"),
		static.NewLayer([]byte("tokenizer"), "application/vnd.example.model.tokenizer"))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := random.Index(1024, 3, 3)
	if err != nil {
		t.Fatal(err)
	}
	artRef, _ := name.NewTag(host+"/models/m:v1", name.Insecure)
	idxRef, _ := name.NewTag(host+"/rand/idx:v1", name.Insecure)
	if err := remote.Write(artRef, art, remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(idxRef, idx, remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	c := &Client{Base: srv.URL}
	for _, tc := range []struct {
		ref   string
		blobs int
	}{
		{host + "/models/m:v1", 4},  // manifest, config, 2 layers
		{host + "/rand/idx:v1", 16}, // index, 3 x (manifest, config, 3 layers)
	} {
		ref, err := ParseRef(tc.ref)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		p := &countingProgress{done: map[digest.Digest]string{}}
		roots, err := c.Layout(ctx, ref, dir, Options{Parallel: 4, Progress: p})
		if err != nil {
			t.Fatalf("%s: %v", tc.ref, err)
		}
		if len(roots) != 1 {
			t.Errorf("%s: %d roots", tc.ref, len(roots))
		}
		if n := testutil.LayoutBlobs(t, dir); n != tc.blobs || len(p.done) != tc.blobs {
			t.Errorf("%s: %d blobs on disk, %d reported, want %d", tc.ref, n, len(p.done), tc.blobs)
		}
	}
}

// TestBlobDigestMismatch: a registry sending wrong bytes fails the get,
// leaves no file and no partial file to resume from.
func TestBlobDigestMismatch(t *testing.T) {
	good := []byte("the right bytes")
	d := digest.FromBytes(good)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("the wrong bytes"))
	}))
	t.Cleanup(srv.Close)
	path := filepath.Join(t.TempDir(), "blob")
	c := &Client{Base: srv.URL}
	_, err := c.Blob(context.Background(), Ref{"r.example", "a/b", d.String()}, d, -1, path, nil)
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("err = %v, want a digest mismatch", err)
	}
	for _, p := range []string{path, path + ".partial"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s exists after a mismatch", p)
		}
	}
}
