package localregistry

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// PushIndex writes a multi-platform index (and every image it lists) to
// repo:tag on this registry.
func (r *Registry) PushIndex(ctx context.Context, repo, tag string, idx v1.ImageIndex) (name.Reference, error) {
	ref, err := name.NewTag(fmt.Sprintf("%s/%s:%s", r.Host(), repo, tag), name.Insecure)
	if err != nil {
		return nil, err
	}
	if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("push index %s: %w", ref, err)
	}
	return ref, nil
}
