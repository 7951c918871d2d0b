package agent

import (
	"strings"
	"testing"
)

func FuzzRoutingAndNames(f *testing.F) {
	for _, p := range []string{
		"/v2/library/ubuntu/manifests/latest",
		"/v2/a/b/c/blobs/sha256:" + strings.Repeat("a", 64),
		"/v2/x/tags/list",
		"/v2/blobs/blobs/blobs/x",
		"/v2/a..b/manifests/-x",
		"/v2/A/manifests/sha256:zz",
		"/v2/x/blobs/uploads/123",
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		name, kind, rest, ok := splitV2(p)
		if !ok {
			return
		}
		switch kind {
		case "blobs", "blobs/uploads", "manifests", "tags":
		default:
			t.Fatalf("splitV2(%q) kind %q", p, kind)
		}
		if validName(name) {
			if len(name) > 255 || strings.Contains(name, "..") || strings.Contains(name, "//") ||
				strings.ToLower(name) != name || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") {
				t.Fatalf("validName accepted %q", name)
			}
		}
		d, tag, ok := parseRef(rest)
		switch {
		case !ok && (d != "" || tag != ""):
			t.Fatalf("parseRef(%q) rejected but returned %q %q", rest, d, tag)
		case ok && (d == "") == (tag == ""):
			t.Fatalf("parseRef(%q) = digest %q and tag %q: want exactly one", rest, d, tag)
		case ok && d != "" && d.Validate() != nil:
			t.Fatalf("parseRef(%q) accepted an invalid digest", rest)
		case ok && tag != "" && (len(tag) > 128 || strings.ContainsAny(tag, "/:@")):
			t.Fatalf("parseRef(%q) accepted tag %q", rest, tag)
		}
	})
}
