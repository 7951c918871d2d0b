package localregistry

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// SampleImage builds a deterministic image of n layers, each an
// uncompressed tar holding one file of layerSize pseudo-random bytes (so
// the same arguments always give the same digests).
func SampleImage(n int, layerSize int64, seed uint64) (v1.Image, error) {
	sizes := make([]int64, n)
	for i := range sizes {
		sizes[i] = layerSize
	}
	return ImageOfLayers(seed, sizes...)
}

// ImageOfLayers is SampleImage with a size per layer: layer i holds
// layer<i>.bin, sizes[i] pseudo-random bytes from seed+i.
func ImageOfLayers(seed uint64, sizes ...int64) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	var layers []v1.Layer
	for i, size := range sizes {
		b, err := tarWithFile(fmt.Sprintf("layer%d.bin", i), size, seed+uint64(i))
		if err != nil {
			return nil, err
		}
		layers = append(layers, static.NewLayer(b, types.OCIUncompressedLayer))
	}
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Cmd = []string{"/layer0.bin"}
	return mutate.ConfigFile(img, cf)
}

// RandomBytes returns size deterministic pseudo-random bytes.
func RandomBytes(size int64, seed uint64) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed^0x5ea1))
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

func tarWithFile(name string, size int64, seed uint64) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(int(size) + 2048)
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{Name: name, Mode: 0o644, Size: size, ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(RandomBytes(size, seed)); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Push writes img to repo:tag on this registry.
func (r *Registry) Push(ctx context.Context, repo, tag string, img v1.Image) (name.Reference, error) {
	return r.push(repo, tag, "push", func(ref name.Tag) error { return remote.Write(ref, img, remote.WithContext(ctx)) })
}

// push names repo:tag on this registry and writes it with write; what
// ("push", "push index") starts the error.
func (r *Registry) push(repo, tag, what string, write func(name.Tag) error) (name.Reference, error) {
	ref, err := name.NewTag(fmt.Sprintf("%s/%s:%s", r.Host(), repo, tag), name.Insecure)
	if err != nil {
		return nil, err
	}
	if err := write(ref); err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, ref, err)
	}
	return ref, nil
}

// PushBlob uploads raw bytes as a blob of repo (no manifest) and returns
// its digest.
func (r *Registry) PushBlob(ctx context.Context, repo string, data []byte) (digest.Digest, error) {
	l := static.NewLayer(data, types.OCIUncompressedLayer)
	ref, err := name.NewRepository(fmt.Sprintf("%s/%s", r.Host(), repo), name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.WriteLayer(ref, l, remote.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("push blob to %s: %w", ref, err)
	}
	return digest.FromBytes(data), nil
}
