// Package tagstore keeps what the build-index knows of tags: which manifest
// each (namespace, tag) names and when that was last learnt. TagStore is the
// seam; File is the default implementation (a Redis one can follow).
package tagstore

import (
	"context"
	"errors"
	"time"

	"github.com/opencontainers/go-digest"
)

// ErrNotFound: the store knows nothing of this tag.
var ErrNotFound = errors.New("tagstore: tag not found")

// Source says how an entry was learnt.
const (
	SourceUpstream = "upstream" // resolved through an origin
	SourcePut      = "put"      // recorded by a PUT (preheat)
)

// Entry is one tag's mapping.
type Entry struct {
	Digest     digest.Digest `json:"digest"`
	MediaType  string        `json:"media_type"`
	Size       int64         `json:"size"`
	ResolvedAt time.Time     `json:"resolved_at"`
	Source     string        `json:"source,omitempty"`
}

// TagStore maps (namespace, tag) to an Entry. Namespaces and tags are
// validated by the caller (OCI grammar); implementations are safe for
// concurrent use.
type TagStore interface {
	// Get returns the entry of ns:tag, or ErrNotFound.
	Get(ctx context.Context, ns, tag string) (Entry, error)
	// Put records (or replaces) the entry of ns:tag.
	Put(ctx context.Context, ns, tag string, e Entry) error
	// List returns the tags of ns it holds, sorted; none is not an error.
	List(ctx context.Context, ns string) ([]string, error)
}
