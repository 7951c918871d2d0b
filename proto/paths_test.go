package proto_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/proto"
)

var testDigest = digest.FromString("shoal")

// Every URL a client builds reaches the route its server registers, with
// the parameters back as they were sent (the namespace's slashes kept in
// one escaped segment).
func TestURLsMatchPatterns(t *testing.T) {
	const base = "http://server:7610/"
	for _, ns := range []string{"library/ubuntu", "ghcr.io/org/app", "localhost:5000/a/b-c", "x"} {
		cases := []struct {
			pattern, url string
			want         map[string]string
		}{
			{proto.PatternBlob, proto.BlobURL(base, ns, testDigest), map[string]string{"digest": testDigest.String()}},
			{proto.PatternMetainfo, proto.MetainfoURL(base, ns, testDigest), map[string]string{"digest": testDigest.String()}},
			{proto.PatternTorrent, proto.TorrentURL(base, ns, testDigest), map[string]string{"digest": testDigest.String()}},
			{proto.PatternPieces, proto.PiecesURL(base, ns, testDigest, 7), map[string]string{"digest": testDigest.String(), "?from": "7"}},
			{proto.PatternManifest, proto.ManifestURL(base, ns, "v1.2_rc-3"), map[string]string{"ref": "v1.2_rc-3"}},
			{proto.PatternManifest, proto.ManifestURL(base, ns, testDigest.String()), map[string]string{"ref": testDigest.String()}},
			{proto.PatternOriginTags, proto.OriginTagsURL(base, ns), nil},
			{proto.PatternTags, proto.TagsURL(base, ns), nil},
			{proto.PatternTag, proto.TagURL(base, ns, "latest"), map[string]string{"tag": "latest"}},
		}
		for _, tc := range cases {
			t.Run(tc.pattern+" "+ns, func(t *testing.T) {
				got := route(t, tc.url)
				if got["pattern"] != tc.pattern {
					t.Fatalf("%s reached %q, want %q", tc.url, got["pattern"], tc.pattern)
				}
				if got["ns"] != ns {
					t.Errorf("%s: ns = %q, want %q", tc.url, got["ns"], ns)
				}
				for k, v := range tc.want {
					if got[k] != v {
						t.Errorf("%s: %s = %q, want %q", tc.url, k, got[k], v)
					}
				}
			})
		}
	}
}

// route serves u on a chi router holding every pattern and reports which
// one matched, with its parameters unescaped.
func route(t *testing.T, u string) map[string]string {
	t.Helper()
	got := map[string]string{}
	r := chi.NewRouter()
	for _, p := range []string{proto.PatternBlob, proto.PatternMetainfo, proto.PatternTorrent, proto.PatternPieces,
		proto.PatternManifest, proto.PatternOriginTags, proto.PatternTags, proto.PatternTag, proto.PatternAnnounce} {
		r.Get(p, func(w http.ResponseWriter, req *http.Request) {
			got["pattern"] = p
			for _, k := range []string{proto.ParamNamespace, proto.ParamDigest, proto.ParamRef, proto.ParamTag} {
				if v := chi.URLParam(req, k); v != "" {
					uv, err := url.PathUnescape(v)
					if err != nil {
						t.Errorf("%s: %s = %q: %v", u, k, v, err)
					}
					got[k] = uv
				}
			}
			if from := req.URL.Query().Get(proto.QueryFrom); from != "" {
				got["?from"] = from
			}
		})
	}
	w := httptest.NewRecorder()
	r.ServeHTTP(w, httptest.NewRequest(http.MethodGet, u, nil))
	if w.Code != http.StatusOK {
		t.Fatalf("GET %s: %d", u, w.Code)
	}
	return got
}

func TestURLEscaping(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{proto.BlobURL("http://o:1", "library/ubuntu", testDigest), "http://o:1/namespace/library%2Fubuntu/blobs/" + testDigest.String()},
		{proto.MetainfoURL("http://t/", "ghcr.io/org/app", testDigest), "http://t/namespace/ghcr.io%2Forg%2Fapp/blobs/" + testDigest.String() + "/metainfo"},
		{proto.PiecesURL("http://o", "a", testDigest, 0), "http://o/namespace/a/blobs/" + testDigest.String() + "/pieces?from=0"},
		{proto.TagURL("http://b", "localhost:5000/x", "a b"), "http://b/namespace/localhost:5000%2Fx/tags/a%20b"},
		{proto.ManifestURL("http://o", "x", "?"), "http://o/namespace/x/manifests/%3F"},
		{proto.AnnounceURL("http://t:7600/"), "http://t:7600/announce"},
		{proto.V2BlobURL("http://a/", "library/ubuntu", testDigest), "http://a/v2/library/ubuntu/blobs/" + testDigest.String()},
		{proto.V2TagsPath("x/y", url.Values{"n": {"2"}, "last": {"b"}}), "/v2/x/y/tags/list?last=b&n=2"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %s, want %s", tc.got, tc.want)
		}
	}
}

func TestAnnounceRoute(t *testing.T) {
	u, err := url.Parse(proto.AnnounceURL("http://t:7600"))
	if err != nil {
		t.Fatal(err)
	}
	if got := route(t, u.String())["pattern"]; got != proto.PatternAnnounce {
		t.Fatalf("announce reached %q", got)
	}
}

func TestSplitV2(t *testing.T) {
	for _, tc := range []struct{ p, name, kind, rest string }{
		{"/v2/library/ubuntu/manifests/latest", "library/ubuntu", proto.V2Manifests, "latest"},
		{"/v2/a/b/blobs/" + testDigest.String(), "a/b", proto.V2Blobs, testDigest.String()},
		{"/v2/x/tags/list", "x", proto.V2Tags, "list"},
		{"/v2/x/blobs/uploads/123", "x", proto.V2Uploads, "/123"},
		{"/v2/blobs/blobs/blobs/x", "blobs/blobs", proto.V2Blobs, "x"},
	} {
		name, kind, rest, ok := proto.SplitV2(tc.p)
		if !ok || name != tc.name || kind != tc.kind || rest != tc.rest {
			t.Errorf("SplitV2(%q) = %q %q %q %v, want %q %q %q", tc.p, name, kind, rest, ok, tc.name, tc.kind, tc.rest)
		}
	}
	if _, _, _, ok := proto.SplitV2("/v2/" + strings.Repeat("x", 10)); ok {
		t.Error("SplitV2 accepted a path without an endpoint")
	}
}
