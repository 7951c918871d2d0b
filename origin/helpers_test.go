package origin_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/internal/upstream"
	"github.com/shoal-dev/shoal/origin"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

const testRepo = "test/blob"

// startRegistry runs a real distribution registry on loopback until the
// test ends.
func startRegistry(t *testing.T, opts localregistry.Options) *localregistry.Registry {
	t.Helper()
	reg, err := localregistry.StartWithOptions(t.TempDir(), "127.0.0.1:0", opts, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	serve(t, "registry", reg.Serve)
	return reg
}

// serve runs fn until the test ends.
func serve(t *testing.T, what string, fn func(context.Context) error) {
	t.Helper()
	testutil.Serve(t, what, fn)
}

// upstreamFor is the [[upstream]] entry of a registry reachable at rawURL.
func upstreamFor(t *testing.T, rawURL string) upstream.Config {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return upstream.Config{Host: u.Host, URL: rawURL}
}

// newOrigin builds an origin on loopback with the given upstreams (the first
// is the default) and root (a fresh directory if empty). Run it with run.
func newOrigin(t *testing.T, root string, log *slog.Logger, ups ...upstream.Config) *origin.Origin {
	t.Helper()
	return newOriginEdited(t, root, log, nil, ups...)
}

// newOriginEdited is newOrigin with edit applied to its config.
func newOriginEdited(t *testing.T, root string, log *slog.Logger, edit func(*origin.Config), ups ...upstream.Config) *origin.Origin {
	t.Helper()
	if root == "" {
		root = t.TempDir()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
		if os.Getenv("SHOAL_TEST_LOG") != "" {
			log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
	cfg := origin.Config{
		Listen:      "127.0.0.1:0",
		Root:        root,
		PieceLength: 1 << 20,
		Upstreams:   ups,
	}
	cfg.P2P.Listen = "127.0.0.1:0"
	if edit != nil {
		edit(&cfg)
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	o, err := origin.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// startOrigin is newOrigin, running until the test ends.
func startOrigin(t *testing.T, root string, log *slog.Logger, ups ...upstream.Config) *origin.Origin {
	t.Helper()
	o := newOrigin(t, root, log, ups...)
	serve(t, "origin", o.Run)
	return o
}

func blobURL(o *origin.Origin, ns string, d digest.Digest) string {
	return o.URL() + "/namespace/" + url.PathEscape(ns) + "/blobs/" + d.String()
}

func metaURL(o *origin.Origin, ns string, d digest.Digest) string {
	return blobURL(o, ns, d) + "/metainfo"
}

func piecesURL(o *origin.Origin, ns string, d digest.Digest) string {
	return blobURL(o, ns, d) + "/pieces"
}

// getPieces reads a streamed answer (piece hashes, a blob) to its end: the
// status, the body and the read error (a stream cut short by a failed fetch).
func getPieces(t *testing.T, u string) (*http.Response, []byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// do sends a request and reads the whole answer.
func do(t *testing.T, method, u string, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, u, err)
	}
	return resp, body
}

// ociCode checks that body is OCI error JSON and returns its first code.
func ociCode(t *testing.T, resp *http.Response, body []byte) string {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error answer has Content-Type %q, want application/json; body %q", ct, body)
	}
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) == 0 {
		t.Fatalf("answer %d is not OCI error JSON: %q (%v)", resp.StatusCode, body, err)
	}
	return e.Errors[0].Code
}

// wantError checks status and OCI code of an answer.
func wantError(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d; body %q", resp.StatusCode, status, body)
	}
	if got := ociCode(t, resp, body); got != code {
		t.Fatalf("OCI code %s, want %s; body %q", got, code, body)
	}
}

// storeFiles lists the regular files under the origin store's dir (relative
// to root), e.g. "downloads" or "blobs".
func storeFiles(t *testing.T, root, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(root, dir), func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}

func pushBlob(t *testing.T, reg *localregistry.Registry, repo string, data []byte) digest.Digest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := reg.PushBlob(ctx, repo, data)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
