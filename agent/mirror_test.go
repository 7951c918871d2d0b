package agent_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/testbed/cluster"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

func agentRef(t *testing.T, a interface{ URL() string }, repoTag string) string {
	t.Helper()
	return strings.TrimPrefix(a.URL(), "http://") + "/" + repoTag
}

// pullImage reads the config and every layer of the image at ref through
// go-containerregistry and checks each against its digest. (validate.Image
// would gunzip the layers; the sample image's layers are plain tar.)
func pullImage(t *testing.T, ref string) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	checkImage(t, ref, img)
	return img
}

func checkImage(t *testing.T, ref string, img v1.Image) {
	t.Helper()
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatalf("%s: config: %v", ref, err)
	}
	if cn, _ := img.ConfigName(); digest.FromBytes(raw).String() != cn.String() {
		t.Fatalf("%s: config does not match %s", ref, cn)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) == 0 {
		t.Fatalf("%s: layers: %v", ref, err)
	}
	for _, l := range layers {
		d, _ := l.Digest()
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("%s: layer %s: %v", ref, d, err)
		}
		h := sha256.New()
		_, err = io.Copy(h, rc)
		rc.Close()
		if err != nil || "sha256:"+hex.EncodeToString(h.Sum(nil)) != d.String() {
			t.Fatalf("%s: layer %s does not match its digest (err %v)", ref, d, err)
		}
	}
}

func pushImages(t *testing.T, c *cluster.Cluster) (v1.Image, v1.ImageIndex) {
	t.Helper()
	ctx := context.Background()
	img, err := localregistry.SampleImage(3, 2<<20, 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Registry.Push(ctx, "test/img", "v1", img); err != nil {
		t.Fatal(err)
	}
	arm, err := localregistry.SampleImage(2, 1<<20, 200)
	if err != nil {
		t.Fatal(err)
	}
	docker := mutate.MediaType(img, types.DockerManifestSchema2)
	idx, err := localregistry.Index(map[string]v1.Image{"amd64": img, "arm64": arm})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Registry.PushIndex(ctx, "test/multi", "v1", idx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Registry.Push(ctx, "test/docker", "v1", docker); err != nil {
		t.Fatal(err)
	}
	c.Registry.ResetCounts()
	return img, idx
}

func TestGoContainerRegistryPullsThroughTheAgent(t *testing.T) {
	c := start(t, 2)
	img, idx := pushImages(t, c)
	wantDigest, _ := img.Digest()

	// By tag, on both agents: the second agent's layers come from the swarm.
	for _, a := range c.Agents {
		got := pullImage(t, agentRef(t, a, "test/img:v1"))
		if d, _ := got.Digest(); d != wantDigest {
			t.Fatalf("digest %s, want %s", d, wantDigest)
		}
	}
	// By digest.
	pullImage(t, agentRef(t, c.Agents[0], "test/img@"+wantDigest.String()))
	// A Docker schema2 image keeps its media type.
	dimg := pullImage(t, agentRef(t, c.Agents[1], "test/docker:v1"))
	if mt, _ := dimg.MediaType(); mt != types.DockerManifestSchema2 {
		t.Errorf("docker image media type %s", mt)
	}
	// Every layer crossed the upstream link once, however many agents pulled it.
	layers, _ := img.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		if n := c.Registry.BlobGets(d.String()); n != 1 {
			t.Errorf("layer %s: %d upstream GETs, want 1", d, n)
		}
	}

	// A multi-arch index by tag: the index, then each platform's image.
	r, _ := name.ParseReference(agentRef(t, c.Agents[0], "test/multi:v1"), name.Insecure)
	gotIdx, err := remote.Index(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(gotIdx, validate.Fast); err != nil {
		t.Fatal(err)
	}
	wantIdx, _ := idx.Digest()
	if d, _ := gotIdx.Digest(); d != wantIdx {
		t.Fatalf("index digest %s, want %s", d, wantIdx)
	}
	arm, err := remote.Image(r, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "arm64"}))
	if err != nil {
		t.Fatalf("arm64 image through the agent: %v", err)
	}
	checkImage(t, "arm64", arm)
}

func TestManifestAndTagEndpoints(t *testing.T) {
	c := start(t, 1)
	img, _ := pushImages(t, c)
	a := c.Agents[0]
	d, _ := img.Digest()
	raw, _ := img.RawManifest()

	resp, body := do(t, "GET", a.URL()+"/v2/test/img/manifests/v1")
	if resp.StatusCode != 200 || string(body) != string(raw) || resp.Header.Get("Docker-Content-Digest") != d.String() ||
		resp.Header.Get("Content-Type") != string(types.OCIManifestSchema1) {
		t.Fatalf("GET manifest by tag: %d %q %q", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), resp.Header.Get("Content-Type"))
	}
	resp, body = do(t, "HEAD", a.URL()+"/v2/test/img/manifests/"+d.String())
	if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != int64(len(raw)) {
		t.Fatalf("HEAD manifest by digest: %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v2/test/img/manifests/nope", 404, "MANIFEST_UNKNOWN"},
		{"GET", "/v2/test/img/manifests/-bad-tag", 400, "MANIFEST_INVALID"},
		{"GET", "/v2/test/img/manifests/sha256:abc", 400, "MANIFEST_INVALID"},
		{"PUT", "/v2/test/img/manifests/v2", 405, "UNSUPPORTED"},
		{"DELETE", "/v2/test/img/manifests/" + d.String(), 405, "UNSUPPORTED"},
		{"PATCH", "/v2/test/img/blobs/uploads/123", 405, "UNSUPPORTED"},
		{"GET", "/v2/test/nothere/manifests/v1", 404, "MANIFEST_UNKNOWN"},
	} {
		resp, body := do(t, tc.method, a.URL()+tc.path)
		wantOCIError(t, resp, body, tc.status, tc.code)
	}

	// tags/list with n and last.
	for _, tag := range []string{"a", "b", "c"} {
		if _, err := c.Registry.Push(context.Background(), "test/img", tag, img); err != nil {
			t.Fatal(err)
		}
	}
	resp, body = do(t, "GET", a.URL()+"/v2/test/img/tags/list")
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"tags":["a","b","c","v1"]`) {
		t.Fatalf("tags/list: %d %s", resp.StatusCode, body)
	}
	resp, body = do(t, "GET", a.URL()+"/v2/test/img/tags/list?n=2&last=a")
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"tags":["b","c"]`) || !strings.Contains(resp.Header.Get("Link"), "last=c") {
		t.Fatalf("tags/list?n=2&last=a: %d %s Link=%q", resp.StatusCode, body, resp.Header.Get("Link"))
	}
	resp, body = do(t, "GET", a.URL()+"/v2/test/img/tags/list?n=x")
	if resp.StatusCode != 400 {
		t.Fatalf("tags/list?n=x: %d %s", resp.StatusCode, body)
	}
}

// containerd names the upstream registry with ?ns=; the agent passes it on.
func TestNamespaceParameter(t *testing.T) {
	c := start(t, 1)
	img, _ := pushImages(t, c)
	a := c.Agents[0]
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	for _, path := range []string{
		"/v2/test/img/manifests/v1?ns=" + c.UpstreamHost,
		fmt.Sprintf("/v2/test/img/blobs/%s?ns=%s", ld, c.UpstreamHost),
	} {
		req, _ := http.NewRequest("GET", a.URL()+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d", path, resp.StatusCode)
		}
	}
	// A registry the cluster does not know: a clear error, quickly.
	start := time.Now()
	resp, body := do(t, "GET", a.URL()+"/v2/test/img/manifests/v1?ns=unknown.example")
	if resp.StatusCode/100 != 4 || time.Since(start) > 10*time.Second {
		t.Errorf("unknown registry: %d %s after %s", resp.StatusCode, body, time.Since(start))
	}
}

// An upstream that answers 500 or 401 (or nothing) for an image nobody holds:
// the client gets a clear 5xx OCI error quickly, and nothing is cached.
func TestUpstreamFaultsGiveClearErrors(t *testing.T) {
	c := start(t, 1)
	img, _ := pushImages(t, c)
	a := c.Agents[0]
	d, _ := img.Digest()
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	for _, fault := range []int{http.StatusInternalServerError, http.StatusUnauthorized, http.StatusServiceUnavailable} {
		c.Registry.SetFault(fault)
		for _, path := range []string{
			"/v2/test/img/manifests/v1",
			"/v2/test/img/manifests/" + d.String(),
			"/v2/test/img/blobs/" + ld.String(),
		} {
			start := time.Now()
			resp, body := do(t, "GET", a.URL()+path)
			var e ociErrors
			if resp.StatusCode < 500 || json.Unmarshal(body, &e) != nil || len(e.Errors) == 0 {
				t.Errorf("upstream %d, GET %s: %d %s; want a 5xx OCI error", fault, path, resp.StatusCode, body)
			}
			if el := time.Since(start); el > 10*time.Second {
				t.Errorf("upstream %d, GET %s took %s", fault, path, el)
			}
			if fault == http.StatusUnauthorized && strings.Contains(path, "blobs") && e.Errors != nil && e.Errors[0].Code != "DENIED" {
				t.Errorf("upstream 401 on a blob: code %s, want DENIED", e.Errors[0].Code)
			}
		}
	}
	c.Registry.SetFault(0)
	assertCacheEmpty(t, a)
	pullImage(t, agentRef(t, a, "test/img:v1")) // and it recovers
}
