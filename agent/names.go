package agent

import "github.com/shoal-dev/shoal/proto"

// validName reports whether name is a valid repository name (the OCI
// grammar, at most 255 characters, as registries limit it).
func validName(name string) bool { return proto.ValidRepository(name) }

// splitV2 splits a /v2/ path into the repository name, the kind
// ("blobs", "manifests", "tags") and the rest ("<digest>", "<ref>", "list").
func splitV2(p string) (name, kind, rest string, ok bool) { return proto.SplitV2(p) }
