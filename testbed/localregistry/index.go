package localregistry

import (
	"context"
	"maps"
	"slices"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// PushIndex writes a multi-platform index (and every image it lists) to
// repo:tag on this registry.
func (r *Registry) PushIndex(ctx context.Context, repo, tag string, idx v1.ImageIndex) (name.Reference, error) {
	return r.push(repo, tag, "push index", func(ref name.Tag) error { return remote.WriteIndex(ref, idx, remote.WithContext(ctx)) })
}

// Index wraps images in an OCI index, one per linux architecture (in
// sorted order), each image's config set to its architecture so that
// clients choosing a platform check out.
func Index(images map[string]v1.Image) (v1.ImageIndex, error) {
	archs := slices.Sorted(maps.Keys(images))
	adds := make([]mutate.IndexAddendum, 0, len(archs))
	for _, arch := range archs {
		cf, err := images[arch].ConfigFile()
		if err != nil {
			return nil, err
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = "linux", arch
		img, err := mutate.ConfigFile(images[arch], cf)
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.IndexAddendum{Add: img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...), nil
}
