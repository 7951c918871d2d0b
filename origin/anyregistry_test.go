package origin_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/upstream"
	"github.com/shoal-dev/shoal/origin"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

// startOriginAllowing is startOrigin with allow_any_registry set.
func startOriginAllowing(t *testing.T, allow []string, ups ...upstream.Config) *origin.Origin {
	t.Helper()
	cfg := origin.Config{Listen: "127.0.0.1:0", Root: t.TempDir(), PieceLength: 1 << 20, Upstreams: ups, AllowAnyRegistry: allow}
	cfg.P2P.Listen = "127.0.0.1:0"
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	o, err := origin.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	serve(t, "origin", o.Run)
	return o
}

// deniedMessage checks a 403 DENIED answer (the body, or for HEAD the
// httpx.HeaderError header) and returns its message.
func deniedMessage(t *testing.T, method string, resp *http.Response, body []byte) string {
	t.Helper()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("%s: status %d, want 403; body %.300q", method, resp.StatusCode, body)
	}
	var e struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if method == http.MethodHead {
		body = []byte(`{"errors":[` + resp.Header.Get(httpx.HeaderError) + `]}`)
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) == 0 || e.Errors[0].Code != "DENIED" {
		t.Fatalf("%s: answer %.300q, want OCI error DENIED", method, body)
	}
	return e.Errors[0].Message
}

// A namespace naming a registry the origin is not configured for: 403
// DENIED on every endpoint, naming the registry, the registries the origin
// mirrors and the keys that would let it through; upstream is not asked.
func TestUnconfiguredRegistryIsDenied(t *testing.T) {
	reg := startRegistry(t, localregistry.Options{})
	d := pushBlob(t, reg, testRepo, localregistry.RandomBytes(64<<10, 90))
	o := startOrigin(t, "", nil, upstreamFor(t, reg.URL()))
	const ns = "upstream.test:5000/" + testRepo
	for _, tc := range []struct{ method, url string }{
		{http.MethodGet, blobURL(o, ns, d)},
		{http.MethodHead, blobURL(o, ns, d)},
		{http.MethodGet, metaURL(o, ns, d)},
		{http.MethodGet, piecesURL(o, ns, d)},
		{http.MethodGet, manifestURL(o, ns, "v1")},
		{http.MethodHead, manifestURL(o, ns, "v1")},
		{http.MethodGet, manifestURL(o, ns, d.String())},
		{http.MethodGet, tagsURL(o, ns)},
	} {
		resp, body := do(t, tc.method, tc.url, nil)
		msg := deniedMessage(t, tc.method, resp, body)
		for _, want := range []string{`registry "upstream.test:5000" is not configured`, reg.Host(),
			`[[upstream]] host = "upstream.test:5000"`, "allow_any_registry is off", "origins' config file"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s %s: message %q does not say %s", tc.method, tc.url, msg, want)
			}
		}
	}
	if n := reg.TotalBlobGets(); n != 0 {
		t.Errorf("the registry saw %d blob GETs", n)
	}
}

// allow_any_registry: a registry no [[upstream]] names is fetched from when
// a pattern matches its host (plain HTTP only where the pattern says
// http://); a host no pattern matches is denied, the patterns listed.
func TestAllowAnyRegistry(t *testing.T) {
	configured := startRegistry(t, localregistry.Options{})
	other := startRegistry(t, localregistry.Options{})
	data := localregistry.RandomBytes(512<<10, 91)
	d := pushBlob(t, other, "team/app", data)

	o := startOriginAllowing(t, []string{"*.example.com", "http://" + other.Host()}, upstreamFor(t, configured.URL()))
	resp, body := do(t, http.MethodGet, blobURL(o, other.Host()+"/team/app", d), nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("blob from an allowed registry: status %d, %d bytes", resp.StatusCode, len(body))
	}
	if n := other.BlobGets(d.String()); n != 1 {
		t.Errorf("the allowed registry saw %d GETs of the blob, want 1", n)
	}
	img := pushImage(t, other, "team/app", "v1", sampleImage(t, 92))
	resp, body = do(t, http.MethodHead, manifestURL(o, other.Host()+"/team/app", "v1"), nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != img.digest.String() {
		t.Errorf("tag of an allowed registry: %d, digest %q, want %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), img.digest)
	}
	resp, body = do(t, http.MethodGet, tagsURL(o, other.Host()+"/team/app"), nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"v1"`) {
		t.Errorf("tags of an allowed registry: %d %q", resp.StatusCode, body)
	}

	// (A blob the origin holds is served whatever namespace names it: the
	// store is content-addressed. Ask for one it does not hold.)
	missing := digest.FromString("held by no one")
	resp, body = do(t, http.MethodGet, blobURL(o, "upstream.test:5000/team/app", missing), nil)
	msg := deniedMessage(t, http.MethodGet, resp, body)
	if want := `allow_any_registry = ["*.example.com", "http://` + other.Host() + `"] does not match it`; !strings.Contains(msg, want) {
		t.Errorf("message %q does not say %s", msg, want)
	}

	// Without http:// the same registry is asked over TLS, which a
	// plain-HTTP registry cannot answer.
	tls := startOriginAllowing(t, []string{other.Host()}, upstreamFor(t, configured.URL()))
	resp, body = do(t, http.MethodGet, blobURL(tls, other.Host()+"/team/app", d), nil)
	wantError(t, resp, body, http.StatusBadGateway, "UNAVAILABLE")
	if n := other.BlobGets(d.String()); n != 1 {
		t.Errorf("the allowed registry saw %d GETs of the blob over plain HTTP, want still 1", n)
	}
}
