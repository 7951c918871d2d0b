package localregistry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// randomReader yields the same bytes as RandomBytes(size, seed) without
// holding them: benchmarks push and check 1 GiB blobs with it.
type randomReader struct {
	r         *rand.Rand
	pos, size int64
	words     int64 // bytes produced from whole 64-bit words
	buf       [8]byte
}

// NewRandomReader streams RandomBytes(size, seed).
func NewRandomReader(size int64, seed uint64) io.Reader {
	return &randomReader{r: rand.New(rand.NewPCG(seed, seed^0x5ea1)), size: size, words: size &^ 7}
}

func (g *randomReader) Read(p []byte) (int, error) {
	if g.pos >= g.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && g.pos < g.size {
		if g.pos < g.words {
			if g.pos%8 == 0 {
				v := g.r.Uint64()
				for k := range 8 {
					g.buf[k] = byte(v >> (8 * k))
				}
			}
			c := copy(p[n:], g.buf[g.pos%8:])
			n += c
			g.pos += int64(c)
			continue
		}
		p[n] = byte(g.r.Uint32()) // the tail, as RandomBytes makes it
		n++
		g.pos++
	}
	return n, nil
}

// genLayer is a v1.Layer whose bytes are generated on demand.
type genLayer struct {
	size int64
	seed uint64
	hash v1.Hash
}

func (l *genLayer) Digest() (v1.Hash, error) { return l.hash, nil }
func (l *genLayer) DiffID() (v1.Hash, error) { return l.hash, nil }
func (l *genLayer) Size() (int64, error)     { return l.size, nil }
func (l *genLayer) MediaType() (types.MediaType, error) {
	return types.OCIUncompressedLayer, nil
}
func (l *genLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(NewRandomReader(l.size, l.seed)), nil
}
func (l *genLayer) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }

// PushRandomBlob uploads RandomBytes(size, seed) as a blob of repo without
// holding it in memory, and returns its digest.
func (r *Registry) PushRandomBlob(ctx context.Context, repo string, size int64, seed uint64) (digest.Digest, error) {
	h := sha256.New()
	if _, err := io.Copy(h, NewRandomReader(size, seed)); err != nil {
		return "", err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	l := &genLayer{size: size, seed: seed, hash: v1.Hash{Algorithm: "sha256", Hex: sum}}
	ref, err := name.NewRepository(fmt.Sprintf("%s/%s", r.Host(), repo), name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.WriteLayer(ref, l, remote.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("push blob to %s: %w", ref, err)
	}
	return digest.Digest("sha256:" + sum), nil
}
