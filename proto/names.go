package proto

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// The OCI distribution spec's grammar, anchored. The tag and registry-host
// grammars are distribution/reference's; the repository path grammar is
// the spec's <name> (reference exports it only together with a host).
var (
	// TagRegexp is a tag: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
	TagRegexp = regexp.MustCompile(`^` + reference.TagRegexp.String() + `$`)
	// RepositoryRegexp is a repository path without a host
	// ("library/ubuntu").
	RepositoryRegexp = regexp.MustCompile(`^` + pathComponent + `(?:/` + pathComponent + `)*$`)
	// hostRegexp is a registry host, with an optional port.
	hostRegexp = regexp.MustCompile(`^` + reference.DomainRegexp.String() + `$`)
)

const pathComponent = `[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*`

// MaxRepositoryLength is the longest repository path registries accept.
const MaxRepositoryLength = reference.RepositoryNameTotalLengthMax

// ValidTag reports whether tag is a tag in the spec's grammar.
func ValidTag(tag string) bool { return TagRegexp.MatchString(tag) }

// ValidRepository reports whether name is a repository path (no host) of
// at most MaxRepositoryLength characters.
func ValidRepository(name string) bool {
	return len(name) <= MaxRepositoryLength && RepositoryRegexp.MatchString(name)
}

// SplitNamespace splits a namespace into its registry host and repository
// path. The first component is a host when it looks like one, as Docker
// decides: it has a "." or a ":", or is "localhost".
func SplitNamespace(ns string) (host, repo string) {
	if h, rest, ok := strings.Cut(ns, "/"); ok && (strings.ContainsAny(h, ".:") || h == "localhost") {
		return h, rest
	}
	return "", ns
}

// CheckNamespace checks a namespace ({ns}): a repository path, prefixed
// with a registry host when it is not the default upstream
// ("ghcr.io/org/app").
func CheckNamespace(ns string) error {
	host, repo := SplitNamespace(ns)
	if host != "" && !hostRegexp.MatchString(host) {
		return fmt.Errorf("registry host %q is not a host[:port]", host)
	}
	if len(repo) > MaxRepositoryLength {
		return fmt.Errorf("repository longer than %d characters", MaxRepositoryLength)
	}
	if !RepositoryRegexp.MatchString(repo) {
		return errors.New("not a repository name (OCI distribution grammar)")
	}
	return nil
}

// ParseRef splits a manifest reference into a sha256 digest or a tag. ok is
// false when it is neither.
func ParseRef(ref string) (d digest.Digest, tag string, ok bool) {
	if ValidTag(ref) {
		return "", ref, true
	}
	d, err := digest.Parse(ref)
	if err != nil || d.Algorithm() != digest.SHA256 {
		return "", "", false
	}
	return d, "", true
}
