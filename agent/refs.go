package agent

import (
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/proto"
)

// parseRef splits a manifest reference into a digest or a tag. ok is false
// when it is neither.
func parseRef(ref string) (d digest.Digest, tag string, ok bool) { return proto.ParseRef(ref) }
