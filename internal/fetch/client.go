// Package fetch downloads OCI content (images, indexes, artifacts, single
// blobs) through a registry's pull API — in Shoal, the node's agent — into
// an OCI image layout or a file. Every blob streams to a ".partial" file
// beside its destination (memory stays flat whatever its size), is checked
// against its digest and only then renamed into place; an interrupted
// download resumes with a Range request from the partial file's size.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/proto"
)

// maxManifest bounds a manifest read into memory (the distribution spec's
// recommended limit).
const maxManifest = 4 << 20

// Client asks one registry (the agent at Base) for the content of one
// upstream registry, named with ?ns= the way containerd does.
type Client struct {
	Base string       // e.g. http://127.0.0.1:7650
	HTTP *http.Client // nil: http.DefaultClient
}

// Ref is a parsed reference: the upstream registry host, the repository
// and the tag or digest.
type Ref struct {
	Registry string // "ghcr.io", "docker.io", "127.0.0.1:5000"
	Repo     string // "org/app", "library/ubuntu"
	Ref      string // a tag or "sha256:..."
}

// ParseRef parses REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:....
func ParseRef(s string) (Ref, error) {
	r, err := name.ParseReference(s, name.StrictValidation)
	if err != nil {
		if r2, err2 := name.ParseReference(s); err2 == nil && strings.ContainsAny(s, ":@") {
			r, err = r2, nil
		}
	}
	if err != nil {
		return Ref{}, fmt.Errorf("bad reference %q: %w", s, err)
	}
	reg := r.Context().RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io" // containerd's name for it
	}
	out := Ref{Registry: reg, Repo: r.Context().RepositoryStr(), Ref: r.Identifier()}
	if strings.HasPrefix(out.Ref, "sha256:") {
		if _, err := digest.Parse(out.Ref); err != nil {
			return Ref{}, fmt.Errorf("bad reference %q: %w", s, err)
		}
	}
	return out, nil
}

// Digest is the reference's digest, "" for a tag.
func (r Ref) Digest() digest.Digest {
	if d, err := digest.Parse(r.Ref); err == nil {
		return d
	}
	return ""
}

func (r Ref) String() string {
	sep := ":"
	if r.Digest() != "" {
		sep = "@"
	}
	return r.Registry + "/" + r.Repo + sep + r.Ref
}

// get sends GET u (with ?ns=registry) and returns a 2xx response; any
// other answer becomes the agent's OCI error.
func (c *Client) get(ctx context.Context, registry, u string, h http.Header) (*http.Response, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return nil, err
	}
	q := pu.Query()
	q.Set(proto.QueryNamespace, registry)
	pu.RawQuery = q.Encode()
	resp, err := proto.Client{HTTP: c.HTTP}.Do(ctx, "agent", c.Base, http.MethodGet, pu.String(), h)
	var he *proto.Error
	if errors.As(err, &he) && he.Status < 500 {
		return nil, fmt.Errorf("agent %s: %d %s: %w", c.Base, he.Status, http.StatusText(he.Status), he)
	}
	return resp, err
}

// drain reads what is left of a body so that its connection is reused.
func drain(r io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(r, 64<<10))
	_ = r.Close()
}
