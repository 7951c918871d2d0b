package origin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/upstream"
	"github.com/shoal-dev/shoal/origin"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

const imgRepo = "test/img"

func manifestURL(o *origin.Origin, ns, ref string) string {
	return o.URL() + "/namespace/" + url.PathEscape(ns) + "/manifests/" + ref
}

func tagsURL(o *origin.Origin, ns string) string {
	return o.URL() + "/namespace/" + url.PathEscape(ns) + "/tags/list"
}

func sampleImage(t *testing.T, seed uint64) v1.Image {
	t.Helper()
	img, err := localregistry.SampleImage(1, 512, seed)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// dockerImage is a Docker schema2 image of one small layer.
func dockerImage(t *testing.T, seed uint64) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.DockerManifestSchema2)
	img = mutate.ConfigMediaType(img, types.DockerConfigJSON)
	img, err := mutate.AppendLayers(img, static.NewLayer(localregistry.RandomBytes(512, seed), types.DockerUncompressedLayer))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// multiArch is an OCI index of two images.
func multiArch(t *testing.T, seed uint64) v1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	for i, arch := range []string{"amd64", "arm64"} {
		adds = append(adds, mutate.IndexAddendum{Add: sampleImage(t, seed+uint64(i)),
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
}

type pushed struct {
	digest    digest.Digest
	mediaType string
	size      int64
}

func pushImage(t *testing.T, reg *localregistry.Registry, repo, tag string, img v1.Image) pushed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := reg.Push(ctx, repo, tag, img); err != nil {
		t.Fatal(err)
	}
	return describe(t, img)
}

func pushIndex(t *testing.T, reg *localregistry.Registry, repo, tag string, idx v1.ImageIndex) pushed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := reg.PushIndex(ctx, repo, tag, idx); err != nil {
		t.Fatal(err)
	}
	return describe(t, idx)
}

func describe(t *testing.T, m interface {
	RawManifest() ([]byte, error)
	MediaType() (types.MediaType, error)
}) pushed {
	t.Helper()
	raw, err := m.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := m.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	return pushed{digest.FromBytes(raw), string(mt), int64(len(raw))}
}

// wantManifest checks the headers (and for GET the body) of a manifest answer.
func wantManifest(t *testing.T, method string, resp *http.Response, body []byte, want pushed) {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, body %q", resp.StatusCode, body)
	}
	h := resp.Header
	if h.Get("Content-Type") != want.mediaType || h.Get("Docker-Content-Digest") != want.digest.String() ||
		h.Get("Content-Length") != strconv.FormatInt(want.size, 10) {
		t.Fatalf("headers: type %q digest %q length %q; want %q %q %d",
			h.Get("Content-Type"), h.Get("Docker-Content-Digest"), h.Get("Content-Length"), want.mediaType, want.digest, want.size)
	}
	if method == http.MethodHead {
		if len(body) != 0 {
			t.Fatalf("HEAD answered %d body bytes", len(body))
		}
		return
	}
	if got := digest.FromBytes(body); got != want.digest {
		t.Fatalf("body hashes to %s, want %s", got, want.digest)
	}
}

// TestManifestByTagAndDigest: an OCI image, an OCI index and a Docker
// schema2 image are served by tag and by digest, GET and HEAD, with their
// own media type, digest and length, and bodies that hash to the digest.
func TestManifestByTagAndDigest(t *testing.T) {
	reg := startRegistry(t, localregistry.Options{})
	o := startOrigin(t, "", nil, upstreamFor(t, reg.URL()))
	cases := map[string]pushed{
		"oci":    pushImage(t, reg, imgRepo, "oci", sampleImage(t, 1)),
		"index":  pushIndex(t, reg, imgRepo, "index", multiArch(t, 10)),
		"docker": pushImage(t, reg, imgRepo, "docker", dockerImage(t, 20)),
	}
	wantTypes := map[string]types.MediaType{"oci": types.OCIManifestSchema1, "index": types.OCIImageIndex, "docker": types.DockerManifestSchema2}
	for tag, want := range cases {
		t.Run(tag, func(t *testing.T) {
			if want.mediaType != string(wantTypes[tag]) {
				t.Fatalf("fixture has media type %s, want %s", want.mediaType, wantTypes[tag])
			}
			// HEAD first, so GET by digest is the first fetch of the body.
			for _, method := range []string{http.MethodHead, http.MethodGet} {
				for _, ref := range []string{tag, want.digest.String()} {
					resp, body := do(t, method, manifestURL(o, imgRepo, ref), nil)
					wantManifest(t, method, resp, body, want)
				}
			}
		})
	}
}

// TestManifestConcurrentGetsShareOneFetch: ten clients asking at once for a
// manifest by digest cause one upstream GET; later ones come from the store.
func TestManifestConcurrentGetsShareOneFetch(t *testing.T) {
	reg := startRegistry(t, localregistry.Options{})
	o := startOrigin(t, "", nil, upstreamFor(t, reg.URL()))
	want := pushImage(t, reg, imgRepo, "v1", sampleImage(t, 30))
	reg.ResetCounts()

	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			resp, body := do(t, http.MethodGet, manifestURL(o, imgRepo, want.digest.String()), nil)
			wantManifest(t, http.MethodGet, resp, body, want)
		})
	}
	wg.Wait()
	resp, body := do(t, http.MethodGet, manifestURL(o, imgRepo, want.digest.String()), nil)
	wantManifest(t, http.MethodGet, resp, body, want)
	if n := reg.ManifestGets(want.digest.String()); n != 1 {
		t.Fatalf("upstream saw %d manifest GETs, want 1", n)
	}
}

// TestTagsList: the upstream's tags, named by repository; an unknown
// repository is 404 NAME_UNKNOWN.
func TestTagsList(t *testing.T) {
	reg := startRegistry(t, localregistry.Options{})
	o := startOrigin(t, "", nil, upstreamFor(t, reg.URL()))
	img := sampleImage(t, 40)
	for _, tag := range []string{"b", "a", "c-1.0"} {
		pushImage(t, reg, imgRepo, tag, img)
	}
	resp, body := do(t, http.MethodGet, tagsURL(o, imgRepo), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d %q", resp.StatusCode, body)
	}
	var list struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	slices.Sort(list.Tags)
	if list.Name != imgRepo || !slices.Equal(list.Tags, []string{"a", "b", "c-1.0"}) {
		t.Fatalf("got %+v", list)
	}
	resp, body = do(t, http.MethodGet, tagsURL(o, "test/nothing"), nil)
	wantError(t, resp, body, http.StatusNotFound, "NAME_UNKNOWN")
}

// TestManifestErrors: unknown tags and digests, invalid tags and digests.
func TestManifestErrors(t *testing.T) {
	reg := startRegistry(t, localregistry.Options{})
	o := startOrigin(t, "", nil, upstreamFor(t, reg.URL()))
	pushImage(t, reg, imgRepo, "v1", sampleImage(t, 50))
	for _, tc := range []struct {
		name, ns, ref string
		status        int
		code          string
		inMessage     string
	}{
		{"unknown tag", imgRepo, "nope", http.StatusNotFound, "MANIFEST_UNKNOWN", ""},
		{"unknown repo", "test/nothing", "v1", http.StatusNotFound, "MANIFEST_UNKNOWN", ""},
		{"unknown digest", imgRepo, digest.FromString("x").String(), http.StatusNotFound, "MANIFEST_UNKNOWN", ""},
		{"invalid tag", imgRepo, "-v1", http.StatusBadRequest, "MANIFEST_INVALID", "-v1"},
		{"tag too long", imgRepo, strings.Repeat("a", 129), http.StatusBadRequest, "MANIFEST_INVALID", "tag"},
		{"invalid digest", imgRepo, "sha256:abc", http.StatusBadRequest, "DIGEST_INVALID", ""},
		{"sha512 digest", imgRepo, digest.SHA512.FromString("x").String(), http.StatusBadRequest, "DIGEST_INVALID", ""},
		{"invalid repo", "Test/Img", "v1", http.StatusBadRequest, "NAME_INVALID", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, http.MethodGet, manifestURL(o, tc.ns, tc.ref), nil)
			wantError(t, resp, body, tc.status, tc.code)
			if !strings.Contains(string(body), tc.inMessage) {
				t.Errorf("message %q does not name %s", body, tc.inMessage)
			}
			resp, body = do(t, http.MethodHead, manifestURL(o, tc.ns, tc.ref), nil)
			if resp.StatusCode != tc.status || len(body) != 0 {
				t.Errorf("HEAD: status %d with %d body bytes, want %d and none", resp.StatusCode, len(body), tc.status)
			}
		})
	}
}

// TestManifestUpstreamDown: with the registry unreachable, a manifest
// already stored is still served (also by a restarted origin), and
// everything else fails fast with 502 UNAVAILABLE.
func TestManifestUpstreamDown(t *testing.T) {
	reg := startRegistry(t, localregistry.Options{})
	root := t.TempDir()
	up := upstreamFor(t, reg.URL())
	o := startOrigin(t, root, nil, up)
	held := pushImage(t, reg, imgRepo, "held", sampleImage(t, 60))
	other := pushImage(t, reg, imgRepo, "other", sampleImage(t, 70))
	resp, body := do(t, http.MethodGet, manifestURL(o, imgRepo, held.digest.String()), nil)
	wantManifest(t, http.MethodGet, resp, body, held)
	reg.SetDown(true)

	for _, u := range []string{manifestURL(o, imgRepo, "held"), manifestURL(o, imgRepo, other.digest.String()), tagsURL(o, imgRepo)} {
		start := time.Now()
		resp, body := do(t, http.MethodGet, u, nil)
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("GET %s took %s with the registry down", u, took)
		}
		wantError(t, resp, body, http.StatusBadGateway, "UNAVAILABLE")
	}
	for _, o := range []*origin.Origin{o, startOrigin(t, root, nil, up)} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			resp, body := do(t, method, manifestURL(o, imgRepo, held.digest.String()), nil)
			wantManifest(t, method, resp, body, held)
		}
	}
}

// TestManifestDigestMismatch: a manifest whose bytes do not hash to the
// digest asked for is neither served nor stored (502 DIGEST_INVALID, every
// time). A real registry cannot be made to lie, so this one is fake.
func TestManifestDigestMismatch(t *testing.T) {
	want := digest.FromString(`{"schemaVersion":2}`)
	var gets atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		gets.Add(1)
		w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
		w.Header().Set("Docker-Content-Digest", want.String())
		_, _ = w.Write([]byte(`{"schemaVersion":3}`))
	}))
	t.Cleanup(srv.Close)
	root := t.TempDir()
	o := startOrigin(t, root, nil, upstreamFor(t, srv.URL))
	for range 2 {
		resp, body := do(t, http.MethodGet, manifestURL(o, imgRepo, want.String()), nil)
		wantError(t, resp, body, http.StatusBadGateway, "DIGEST_INVALID")
	}
	if gets.Load() != 2 {
		t.Errorf("fake registry saw %d GETs, want 2 (nothing was kept)", gets.Load())
	}
	if got := storeFiles(t, root, "blobs"); len(got) != 0 {
		t.Errorf("blobs/ holds %v after a digest mismatch", got)
	}
}

// TestManifestUpstreamAuth: manifests and tag lists go through the origin's
// credentials; refused ones give 502 DENIED.
func TestManifestUpstreamAuth(t *testing.T) {
	auth, err := localregistry.BasicAuth(t.TempDir(), authUser, authPassword)
	if err != nil {
		t.Fatal(err)
	}
	reg := startRegistry(t, localregistry.Options{Auth: auth})
	img := sampleImage(t, 80)
	ref, err := name.NewTag(reg.Host()+"/"+imgRepo+":v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: authUser, Password: authPassword})); err != nil {
		t.Fatal(err)
	}
	want := describe(t, img)
	up := upstreamFor(t, reg.URL())

	ok := up
	ok.Username, ok.Password = authUser, authPassword
	o := startOrigin(t, "", nil, ok)
	resp, body := do(t, http.MethodGet, manifestURL(o, imgRepo, "v1"), nil)
	wantManifest(t, http.MethodGet, resp, body, want)
	if resp, body := do(t, http.MethodGet, tagsURL(o, imgRepo), nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("tags/list with credentials: %d %q", resp.StatusCode, body)
	}

	bad := up
	bad.Username, bad.Password = authUser, wrongPassword
	o = startOrigin(t, "", nil, bad)
	for _, u := range []string{manifestURL(o, imgRepo, "v1"), manifestURL(o, imgRepo, want.digest.String()), tagsURL(o, imgRepo)} {
		resp, body := do(t, http.MethodGet, u, nil)
		wantError(t, resp, body, http.StatusBadGateway, "DENIED")
	}
}

// TestManifestTooLarge: an upstream manifest over 4 MiB is refused with
// 502 MANIFEST_INVALID and not stored.
func TestManifestTooLarge(t *testing.T) {
	big := bytes.Repeat([]byte(" "), upstream.MaxManifestSize+1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
		_, _ = w.Write(big)
	}))
	t.Cleanup(srv.Close)
	root := t.TempDir()
	o := startOrigin(t, root, nil, upstreamFor(t, srv.URL))
	resp, body := do(t, http.MethodGet, manifestURL(o, imgRepo, digest.FromBytes(big).String()), nil)
	wantError(t, resp, body, http.StatusBadGateway, "MANIFEST_INVALID")
	if got := storeFiles(t, root, "blobs"); len(got) != 0 {
		t.Errorf("blobs/ holds %v", got)
	}
}
