package buildindex_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/buildindex"
	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/internal/upstream"
	"github.com/shoal-dev/shoal/origin"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

const testRepo = "test/img"

// newClock is a settable clock for TTL tests.
func newClock() *testutil.Clock {
	return testutil.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
}

// serve runs fn until the test ends (or stop is called).
func serve(t *testing.T, what string, fn func(context.Context) error) (stop func()) {
	t.Helper()
	return testutil.Serve(t, what, fn)
}

// env is a real upstream registry with a real origin in front of it.
type env struct {
	reg    *localregistry.Registry
	origin *origin.Origin
}

func newEnv(t *testing.T) *env {
	t.Helper()
	log := testutil.Logger(t)
	reg, err := localregistry.Start(t.TempDir(), "127.0.0.1:0", 0, log)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, "registry", reg.Serve)
	u, _ := url.Parse(reg.URL())
	cfg := origin.Config{Listen: "127.0.0.1:0", Root: t.TempDir(), PieceLength: 1 << 20,
		Upstreams: []upstream.Config{{Host: u.Host, URL: reg.URL()}}}
	cfg.P2P.Listen = "127.0.0.1:0"
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	o, err := origin.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, "origin", o.Run)
	return &env{reg: reg, origin: o}
}

// startIndex runs a build-index on root (fresh if empty) with the given
// origins, until the test ends or stop is called.
func startIndex(t *testing.T, root string, clk *testutil.Clock, origins ...string) (*buildindex.Server, func()) {
	t.Helper()
	if root == "" {
		root = t.TempDir()
	}
	cfg := buildindex.Config{Listen: "127.0.0.1:0", Root: root, Origins: origins, ResolveTimeout: 5 * time.Second}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := buildindex.New(cfg, testutil.Logger(t), buildindex.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	return s, serve(t, "buildindex", s.Run)
}

// push writes a one-layer image to testRepo:tag and returns its manifest's
// digest, media type and size. It zeroes the registry's counters after,
// since a push sends its own manifest HEADs.
func (e *env) push(t *testing.T, tag string, seed uint64) tagInfo {
	t.Helper()
	img, err := localregistry.SampleImage(1, 256, seed)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.reg.Push(ctx, testRepo, tag, img); err != nil {
		t.Fatal(err)
	}
	e.reg.ResetCounts()
	return infoOf(t, img)
}

func infoOf(t *testing.T, img v1.Image) tagInfo {
	t.Helper()
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	return tagInfo{Digest: digest.FromBytes(raw), MediaType: string(mt), Size: int64(len(raw))}
}

type tagInfo struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"media_type"`
	Size      int64         `json:"size"`
}

func tagURL(s *buildindex.Server, ns, tag string) string {
	return s.URL() + "/namespace/" + url.PathEscape(ns) + "/tags/" + tag
}

// do sends a request (body JSON-encoded if not nil) and reads the answer.
func do(t *testing.T, method, u string, body any) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewBufferString(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, out
}

// getTag GETs ns:tag and decodes a 200 answer.
func getTag(t *testing.T, s *buildindex.Server, tag string) (tagInfo, *http.Response) {
	t.Helper()
	resp, body := do(t, http.MethodGet, tagURL(s, testRepo, tag), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET tag %s: status %d %q", tag, resp.StatusCode, body)
	}
	var got tagInfo
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	return got, resp
}

// wantError checks status and OCI code of an answer.
func wantError(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	var e struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d; body %q", resp.StatusCode, status, body)
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) == 0 || e.Errors[0].Code != code {
		t.Fatalf("body %q, want OCI code %s", body, code)
	}
}

// deadOrigin is the URL of a port nothing listens on.
const deadOrigin = "http://127.0.0.1:1"
