package agent

import (
	"regexp"

	"github.com/opencontainers/go-digest"
)

// The OCI distribution spec's tag grammar.
var tagRE = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)

// parseRef splits a manifest reference into a digest or a tag. ok is false
// when it is neither.
func parseRef(ref string) (d digest.Digest, tag string, ok bool) {
	if tagRE.MatchString(ref) {
		return "", ref, true
	}
	d, err := digest.Parse(ref)
	if err != nil || d.Algorithm() != digest.SHA256 {
		return "", "", false
	}
	return d, "", true
}
