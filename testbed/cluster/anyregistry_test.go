package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/agent"
	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/origin"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

// nsTransport adds ?ns=<registry host> to every request, as containerd does
// when it uses the agent as a mirror of that registry.
type nsTransport struct {
	ns    string
	inner http.RoundTripper
}

func (t nsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	q := req.URL.Query()
	q.Set("ns", t.ns)
	req.URL.RawQuery = q.Encode()
	return t.inner.RoundTrip(req)
}

// mirrorPull pulls repoTag from the registry ns through agent a with
// go-containerregistry, reading the config and every layer and checking
// each against its digest.
func mirrorPull(ctx context.Context, a *agent.Agent, ns, repoTag string) (v1.Image, error) {
	ref, err := name.ParseReference(strings.TrimPrefix(a.URL(), "http://")+"/"+repoTag, name.Insecure)
	if err != nil {
		return nil, err
	}
	img, err := remote.Image(ref, remote.WithContext(ctx), remote.WithTransport(nsTransport{ns, http.DefaultTransport}))
	if err != nil {
		return nil, err
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if cn, _ := img.ConfigName(); "sha256:"+hex.EncodeToString(sha256Of(raw)) != cn.String() {
		return nil, fmt.Errorf("config does not match %s", cn)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	for _, l := range layers {
		d, _ := l.Digest()
		rc, err := l.Compressed()
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", d, err)
		}
		h := sha256.New()
		_, err = io.Copy(h, rc)
		rc.Close()
		if err != nil || "sha256:"+hex.EncodeToString(h.Sum(nil)) != d.String() {
			return nil, fmt.Errorf("layer %s does not match its digest (%v)", d, err)
		}
	}
	return img, nil
}

func sha256Of(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

// ociAnswer sends method to url and returns the status and the first OCI
// error: from the body, or for HEAD from httpx.HeaderError.
func ociAnswer(t *testing.T, ctx context.Context, method, url string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if method == http.MethodHead {
		body = []byte(`{"errors":[` + resp.Header.Get(httpx.HeaderError) + `]}`)
	}
	var e struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) == 0 {
		t.Fatalf("%s %s: %s with %.300q: want an OCI error", method, url, resp.Status, body)
	}
	return resp.StatusCode, e.Errors[0].Code, e.Errors[0].Message
}

// A namespace naming a registry the origins are not configured for (as
// containerd's ?ns= does): through a real agent, for a manifest by tag and
// by digest, a blob, HEAD and the tag list, the client gets 403 DENIED
// naming the registry, the registries the cluster mirrors and the config
// keys that would let it through. One agent asks the tracker and the
// build-index; the other has neither (its tracker is unreachable: the HTTP
// fallback to the origins; tags straight from the origins) and an
// [[upstream]] it must not fall back to: the answer is final, not an outage.
func TestUnconfiguredRegistryGetsAClearError(t *testing.T) {
	c := startCluster(t, Options{Agents: 2, Origins: 2, PieceLength: 1 << 20, AgentUpstream: true,
		AgentConfig: func(i int, ac *agent.Config) {
			if i == 1 {
				ac.Trackers, ac.BuildIndex = []string{"http://127.0.0.1:1"}, nil
			}
		}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	img, err := localregistry.SampleImage(2, 1<<20, 70)
	if err != nil {
		t.Fatal(err)
	}
	// The registry the cluster mirrors has the image: only the namespace is wrong.
	if _, err := c.Registry.Push(ctx, "test/img", "v1", img); err != nil {
		t.Fatal(err)
	}
	c.Registry.ResetCounts()
	md, _ := img.Digest()
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	const ns = "upstream.test:5000"
	wantMessage := func(what, msg string) {
		t.Helper()
		for _, want := range []string{`registry "upstream.test:5000" is not configured`, c.UpstreamHost,
			`[[upstream]] host = "upstream.test:5000"`, "allow_any_registry", "origins' config file"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: message %q does not say %s", what, msg, want)
			}
		}
	}
	for i, a := range c.Agents {
		for _, tc := range []struct{ method, path string }{
			{http.MethodGet, "/v2/test/img/manifests/v1"},
			{http.MethodHead, "/v2/test/img/manifests/v1"},
			{http.MethodGet, "/v2/test/img/manifests/" + md.String()},
			{http.MethodGet, "/v2/test/img/blobs/" + ld.String()},
			{http.MethodHead, "/v2/test/img/blobs/" + ld.String()},
			{http.MethodGet, "/v2/test/img/tags/list"},
		} {
			what := fmt.Sprintf("agent %d: %s %s", i, tc.method, tc.path)
			start := time.Now()
			status, code, msg := ociAnswer(t, ctx, tc.method, a.URL()+tc.path+"?ns="+ns)
			if status != http.StatusForbidden || code != "DENIED" {
				t.Errorf("%s: %d %s %q, want 403 DENIED", what, status, code, msg)
			}
			wantMessage(what, msg)
			if el := time.Since(start); el > 10*time.Second {
				t.Errorf("%s took %s", what, el)
			}
		}
		// go-containerregistry, as a client, sees the same.
		_, err := mirrorPull(ctx, a, ns, "test/img:v1")
		var te *transport.Error
		if !errors.As(err, &te) || te.StatusCode != http.StatusForbidden || len(te.Errors) == 0 || te.Errors[0].Code != "DENIED" {
			t.Fatalf("agent %d: go-containerregistry pull: %v, want 403 DENIED", i, err)
		}
		wantMessage(fmt.Sprintf("agent %d: go-containerregistry", i), te.Errors[0].Message)
		if fb := metricLine(t, a.AdminURL(), "shoal_agent_fallbacks_total"); strings.Contains(fb, "origins_down") {
			t.Errorf("agent %d went to its [[upstream]] for a denied blob: %s", i, fb)
		}
	}
	if n := c.Registry.TotalBlobGets(); n != 0 {
		t.Errorf("the configured registry saw %d blob GETs for a namespace that names another", n)
	}
	// The same image through the registry's own namespace still pulls.
	if _, err := mirrorPull(ctx, c.Agents[0], c.UpstreamHost, "test/img:v1"); err != nil {
		t.Fatalf("pull of the configured registry: %v", err)
	}
}

// allow_any_registry on the origins: an image on a second real registry,
// which no [[upstream]] names, pulls through two agents at once (the
// namespace naming it, as containerd sends it) and verifies; the registry
// sees one GET per blob. A registry no pattern matches is still denied,
// the patterns listed.
func TestAllowAnyRegistryPullsFromAnUnlistedRegistry(t *testing.T) {
	other, err := localregistry.Start(t.TempDir(), "127.0.0.254:0", 0, testLog(t).With("role", "other-registry"))
	if err != nil {
		t.Fatal(err)
	}
	testutil.Serve(t, "other registry", other.Serve)
	allow := []string{"*.example.com", "http://127.0.0.254"} // any port of 127.0.0.254, plain HTTP
	c := startCluster(t, Options{Agents: 2, Origins: 2, PieceLength: 1 << 20,
		OriginConfig: func(_ int, oc *origin.Config) { oc.AllowAnyRegistry = allow }})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	img, err := localregistry.SampleImage(3, 3<<20, 71)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Push(ctx, "team/app", "v1", img); err != nil {
		t.Fatal(err)
	}
	other.ResetCounts()
	c.Registry.ResetCounts()

	var wg sync.WaitGroup
	errs := make([]error, len(c.Agents))
	for i, a := range c.Agents {
		wg.Go(func() {
			got, err := mirrorPull(ctx, a, other.Host(), "team/app:v1")
			if err == nil {
				if want, _ := img.Digest(); mustDigest(t, got) != want {
					err = fmt.Errorf("image digest %s, want %s", mustDigest(t, got), want)
				}
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("agent %d: pull from %s: %v", i, other.Host(), err)
		}
	}
	layers, _ := img.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		if n := other.BlobGets(d.String()); n != 1 {
			t.Errorf("the unlisted registry saw %d GETs of layer %s, want 1", n, d)
		}
	}
	if n := c.Registry.TotalBlobGets(); n != 0 {
		t.Errorf("the configured registry saw %d blob GETs", n)
	}
	for i, a := range c.Agents {
		for _, l := range layers {
			d, _ := l.Digest()
			waitCached(t, a.Store(), digest.Digest(d.String()), "agent %d did not cache layer %s", i, d)
		}
	}

	status, code, msg := ociAnswer(t, ctx, http.MethodGet, c.Agents[0].URL()+"/v2/team/app/manifests/v1?ns=upstream.test:5000")
	if status != http.StatusForbidden || code != "DENIED" ||
		!strings.Contains(msg, `allow_any_registry = ["*.example.com", "http://127.0.0.254"] does not match it`) {
		t.Errorf("registry no pattern matches: %d %s %q", status, code, msg)
	}
}
