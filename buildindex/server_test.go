package buildindex_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/buildindex"
)

// TestResolveCacheAndRetag: a tag is resolved through a real origin (past a
// dead one on the ring), trusted for tag_ttl without reaching upstream, and
// re-resolved after it, seeing a retag.
func TestResolveCacheAndRetag(t *testing.T) {
	e := newEnv(t)
	clk := newClock()
	s, _ := startIndex(t, "", clk, deadOrigin, e.origin.URL())
	v1 := e.push(t, "latest", 1)

	if got, _ := getTag(t, s, "latest"); got != v1 {
		t.Fatalf("resolved %+v, want %+v", got, v1)
	}
	clk.Advance(buildindex.DefaultTagTTL - time.Second)
	if got, _ := getTag(t, s, "latest"); got != v1 {
		t.Fatalf("within TTL: %+v, want %+v", got, v1)
	}
	if n := e.reg.ManifestHeads("latest"); n != 1 {
		t.Fatalf("upstream saw %d HEADs of the tag within the TTL, want 1", n)
	}

	v2 := e.push(t, "latest", 2)
	if got, _ := getTag(t, s, "latest"); got != v1 {
		t.Fatalf("retag seen before the TTL ran out: %+v", got)
	}
	clk.Advance(2 * time.Second)
	if got, _ := getTag(t, s, "latest"); got != v2 {
		t.Fatalf("after the TTL: %+v, want the retagged %+v", got, v2)
	}
	if s.Resolutions() != 2 {
		t.Fatalf("%d resolutions, want 2", s.Resolutions())
	}
}

// TestStaleWhenUpstreamDown: with the registry unreachable, an expired tag
// is still answered (marked stale), quickly; an unknown one fails with 502;
// a build-index restarted on the same root still answers known tags.
func TestStaleWhenUpstreamDown(t *testing.T) {
	e := newEnv(t)
	clk := newClock()
	root := t.TempDir()
	s, stop := startIndex(t, root, clk, e.origin.URL())
	v1 := e.push(t, "v1", 1)
	e.push(t, "never-resolved", 2)
	getTag(t, s, "v1")

	e.reg.SetDown(true)
	clk.Advance(time.Hour)
	start := time.Now()
	got, resp := getTag(t, s, "v1")
	if got != v1 || resp.Header.Get("X-Shoal-Stale") != "true" {
		t.Fatalf("stale answer %+v (X-Shoal-Stale %q), want %+v", got, resp.Header.Get("X-Shoal-Stale"), v1)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("stale answer took %s", took)
	}
	resp, body := do(t, http.MethodGet, tagURL(s, testRepo, "never-resolved"), nil)
	wantError(t, resp, body, http.StatusBadGateway, "UNAVAILABLE")

	stop()
	s2, _ := startIndex(t, root, clk, e.origin.URL())
	if got, _ := getTag(t, s2, "v1"); got != v1 {
		t.Fatalf("after restart: %+v, want %+v", got, v1)
	}
}

// TestRestartWithinTTL: a restarted build-index trusts what its
// predecessor resolved, without asking upstream.
func TestRestartWithinTTL(t *testing.T) {
	e := newEnv(t)
	clk := newClock()
	root := t.TempDir()
	s, stop := startIndex(t, root, clk, e.origin.URL())
	v1 := e.push(t, "v1", 1)
	getTag(t, s, "v1")
	stop()
	s2, _ := startIndex(t, root, clk, e.origin.URL())
	got, resp := getTag(t, s2, "v1")
	if got != v1 || resp.Header.Get("X-Shoal-Stale") != "" || s2.Resolutions() != 0 || e.reg.ManifestHeads("v1") != 1 {
		t.Fatalf("after restart: %+v stale=%q, %d resolutions, %d upstream HEADs", got, resp.Header.Get("X-Shoal-Stale"),
			s2.Resolutions(), e.reg.ManifestHeads("v1"))
	}
}

// TestUnknownTag: a tag upstream does not have is 404 MANIFEST_UNKNOWN, and
// so are tags of a repository it does not have.
func TestUnknownTag(t *testing.T) {
	e := newEnv(t)
	s, _ := startIndex(t, "", newClock(), e.origin.URL())
	e.push(t, "v1", 1)
	for _, u := range []string{tagURL(s, testRepo, "nope"), tagURL(s, "test/nothing", "v1")} {
		resp, body := do(t, http.MethodGet, u, nil)
		wantError(t, resp, body, http.StatusNotFound, "MANIFEST_UNKNOWN")
	}
}

// TestPutThenGet: a PUT mapping is answered without upstream; after the
// TTL a tag upstream does not know keeps its PUT mapping. Bad bodies and
// names are refused, naming what is wrong.
func TestPutThenGet(t *testing.T) {
	e := newEnv(t)
	clk := newClock()
	s, _ := startIndex(t, "", clk, e.origin.URL())
	want := tagInfo{Digest: digest.FromString("m"), MediaType: "application/vnd.oci.image.index.v1+json", Size: 1234}
	resp, body := do(t, http.MethodPut, tagURL(s, testRepo, "pre"), want)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: status %d %q", resp.StatusCode, body)
	}
	if got, _ := getTag(t, s, "pre"); got != want {
		t.Fatalf("GET after PUT: %+v, want %+v", got, want)
	}
	if s.Resolutions() != 0 {
		t.Fatalf("GET after PUT resolved upstream")
	}
	clk.Advance(time.Hour)
	if got, resp := getTag(t, s, "pre"); got != want || resp.Header.Get("X-Shoal-Stale") != "true" {
		t.Fatalf("PUT tag unknown upstream after the TTL: %+v", got)
	}

	for _, tc := range []struct {
		name, tag string
		body      any
		code      string
	}{
		{"bad digest", "x", tagInfo{Digest: "sha256:abc", MediaType: want.MediaType, Size: 1}, "DIGEST_INVALID"},
		{"sha512", "x", tagInfo{Digest: digest.SHA512.FromString("m"), MediaType: want.MediaType, Size: 1}, "DIGEST_INVALID"},
		{"no media type", "x", tagInfo{Digest: want.Digest, Size: 1}, "MANIFEST_INVALID"},
		{"zero size", "x", tagInfo{Digest: want.Digest, MediaType: want.MediaType}, "SIZE_INVALID"},
		{"not json", "x", "{", "MANIFEST_INVALID"},
		{"unknown field", "x", `{"digest":"` + want.Digest.String() + `","media_type":"a/b","size":1,"sise":2}`, "MANIFEST_INVALID"},
		{"bad tag", ".x", want, "MANIFEST_INVALID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, http.MethodPut, tagURL(s, testRepo, tc.tag), tc.body)
			wantError(t, resp, body, http.StatusBadRequest, tc.code)
		})
	}
	resp, body = do(t, http.MethodGet, s.URL()+"/namespace/"+url.PathEscape("..")+"/tags/x", nil)
	wantError(t, resp, body, http.StatusBadRequest, "NAME_INVALID")
}

// TestConcurrentMissesOneResolution: ten clients asking for one unresolved
// tag at once cause one resolution and one upstream HEAD.
func TestConcurrentMissesOneResolution(t *testing.T) {
	e := newEnv(t)
	s, _ := startIndex(t, "", newClock(), e.origin.URL())
	want := e.push(t, "v1", 1)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if got, _ := getTag(t, s, "v1"); got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
	wg.Wait()
	if s.Resolutions() != 1 || e.reg.ManifestHeads("v1") != 1 {
		t.Fatalf("%d resolutions, %d upstream HEADs; want 1 and 1", s.Resolutions(), e.reg.ManifestHeads("v1"))
	}
}

// TestTagsListMerges: the upstream's tags and the PUT ones, sorted; with
// the registry down, the known ones alone.
func TestTagsListMerges(t *testing.T) {
	e := newEnv(t)
	s, _ := startIndex(t, "", newClock(), e.origin.URL())
	e.push(t, "b", 1)
	e.push(t, "a", 1)
	getTag(t, s, "a")
	put := tagInfo{Digest: digest.FromString("m"), MediaType: "application/vnd.oci.image.manifest.v1+json", Size: 10}
	if resp, body := do(t, http.MethodPut, tagURL(s, testRepo, "c"), put); resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %d %q", resp.StatusCode, body)
	}
	list := func() []string {
		t.Helper()
		resp, body := do(t, http.MethodGet, s.URL()+"/namespace/"+url.PathEscape(testRepo)+"/tags", nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("list: %d %q", resp.StatusCode, body)
		}
		var l struct {
			Name string   `json:"name"`
			Tags []string `json:"tags"`
		}
		if err := json.Unmarshal(body, &l); err != nil || l.Name != testRepo {
			t.Fatalf("list body %q: %v", body, err)
		}
		return l.Tags
	}
	if got := list(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("merged list %v", got)
	}
	e.reg.SetDown(true)
	if got := list(); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("list with the registry down %v, want the known tags", got)
	}
	resp, body := do(t, http.MethodGet, s.URL()+"/namespace/"+url.PathEscape("test/other")+"/tags", nil)
	wantError(t, resp, body, http.StatusBadGateway, "UNAVAILABLE")
}
