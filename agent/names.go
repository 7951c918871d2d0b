package agent

import (
	"regexp"
	"strings"
)

// The OCI distribution spec's repository name grammar.
var nameRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)

// validName reports whether name is a valid repository name (at most 255
// characters, as registries limit it).
func validName(name string) bool { return len(name) <= 255 && nameRE.MatchString(name) }

// splitV2 splits a /v2/ path into the repository name, the kind
// ("blobs", "manifests", "tags") and the rest ("<digest>", "<ref>", "list").
func splitV2(p string) (name, kind, rest string, ok bool) {
	p = strings.TrimPrefix(p, "/v2/")
	for _, k := range []string{"/blobs/uploads", "/blobs/", "/manifests/", "/tags/"} {
		if i := strings.LastIndex(p, k); i > 0 {
			kind = strings.Trim(k, "/")
			return p[:i], kind, p[i+len(k):], true
		}
	}
	return "", "", "", false
}
