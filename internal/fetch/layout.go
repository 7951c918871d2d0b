package fetch

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-dev/shoal/proto"
)

// Media types of indexes; anything else with layers/config is a manifest.
const (
	mediaDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
)

var acceptManifests = strings.Join([]string{
	ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest, mediaDockerList, mediaDockerManifest,
}, ", ")

// Platform picks manifests of an index; empty fields match anything.
type Platform struct{ OS, Arch, Variant string }

// ParsePlatform parses os/arch[/variant].
func ParsePlatform(s string) (Platform, error) {
	p := strings.Split(s, "/")
	if len(p) < 2 || len(p) > 3 || p[0] == "" || p[1] == "" {
		return Platform{}, fmt.Errorf("bad platform %q: want os/arch[/variant]", s)
	}
	pl := Platform{OS: p[0], Arch: p[1]}
	if len(p) == 3 {
		pl.Variant = p[2]
	}
	return pl, nil
}

func (pl Platform) matches(p *ocispec.Platform) bool {
	return p != nil && p.OS == pl.OS && p.Architecture == pl.Arch && (pl.Variant == "" || p.Variant == pl.Variant)
}

// Options shape a layout download.
type Options struct {
	Platform *Platform // nil: every platform of an index
	Parallel int       // blobs downloaded at once (default 4)
	Progress Progress  // nil: none
}

// Layout downloads ref (an image, an index or any artifact) into the OCI
// image layout dir and returns its index.json descriptors. Manifests are
// blobs too; every blob is verified.
func (c *Client) Layout(ctx context.Context, ref Ref, dir string, o Options) ([]ocispec.Descriptor, error) {
	if o.Progress == nil {
		o.Progress = noProgress{}
	}
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	top, raw, err := c.Manifest(ctx, ref, ref.Ref)
	if err != nil {
		return nil, err
	}
	l := &layoutRun{c: c, ref: ref, dir: dir, o: o, seen: map[digest.Digest]bool{}}
	l.g, ctx = errgroup.WithContext(ctx)
	l.g.SetLimit(o.Parallel)
	var roots []ocispec.Descriptor
	if isIndex(top.MediaType) && o.Platform != nil {
		var idx ocispec.Index
		if err := json.Unmarshal(raw, &idx); err != nil {
			return nil, fmt.Errorf("index %s: %w", top.Digest, err)
		}
		for _, m := range idx.Manifests {
			if o.Platform.matches(m.Platform) {
				roots = append(roots, m)
			}
		}
		if len(roots) == 0 {
			return nil, fmt.Errorf("%s: no manifest for platform %s/%s in the index", ref, o.Platform.OS, o.Platform.Arch)
		}
	} else {
		roots = []ocispec.Descriptor{top}
	}
	walkErr := func() error {
		for _, r := range roots {
			if err := l.walk(ctx, r, raw); err != nil {
				return err
			}
		}
		return nil
	}()
	if err := l.g.Wait(); err != nil {
		return nil, err
	}
	if walkErr != nil {
		return nil, walkErr
	}
	if ref.Digest() == "" {
		for i := range roots {
			roots[i].Annotations = map[string]string{ocispec.AnnotationRefName: ref.Ref}
		}
	}
	return roots, writeIndex(dir, roots)
}

type layoutRun struct {
	c    *Client
	ref  Ref
	dir  string
	o    Options
	g    *errgroup.Group
	mu   sync.Mutex
	seen map[digest.Digest]bool
}

// walk stores manifest desc (whose bytes are raw when it is the top one)
// and queues every blob it names.
func (l *layoutRun) walk(ctx context.Context, desc ocispec.Descriptor, top []byte) error {
	var raw []byte
	if top != nil && digest.FromBytes(top) == desc.Digest {
		raw = top
	} else {
		got, b, err := l.c.Manifest(ctx, l.ref, desc.Digest.String())
		if err != nil {
			return err
		}
		if desc.MediaType == "" {
			desc.MediaType = got.MediaType
		}
		raw = b
	}
	if err := l.storeManifest(desc, raw); err != nil {
		return err
	}
	var m struct {
		ocispec.Manifest
		Manifests []ocispec.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	for _, child := range m.Manifests {
		if err := l.walk(ctx, child, nil); err != nil {
			return err
		}
	}
	blobs := append([]ocispec.Descriptor{}, m.Layers...)
	if m.Config.Digest != "" {
		blobs = append([]ocispec.Descriptor{m.Config}, blobs...)
	}
	for _, b := range blobs {
		l.queue(ctx, b)
	}
	return nil
}

func (l *layoutRun) queue(ctx context.Context, b ocispec.Descriptor) {
	l.mu.Lock()
	dup := l.seen[b.Digest]
	l.seen[b.Digest] = true
	l.mu.Unlock()
	if dup {
		return
	}
	l.g.Go(func() error {
		_, err := l.c.Blob(ctx, l.ref, b.Digest, b.Size, blobPath(l.dir, b.Digest), l.o.Progress.Blob(b.Digest, b.Size))
		return err
	})
}

// storeManifest writes a manifest's verified bytes as a blob (atomically).
func (l *layoutRun) storeManifest(desc ocispec.Descriptor, raw []byte) error {
	p := l.o.Progress.Blob(desc.Digest, desc.Size)
	p.Start(0)
	if got := digest.FromBytes(raw); got != desc.Digest {
		err := fmt.Errorf("manifest %s: %w: got %s", desc.Digest, ErrDigestMismatch, got)
		p.Done("", err)
		return err
	}
	path := blobPath(l.dir, desc.Digest)
	if err := writeAtomic(path, raw); err != nil {
		p.Done("", err)
		return err
	}
	p.Add(len(raw))
	p.Done(StateDownloaded, nil)
	return nil
}

// Manifest gets manifest ref (a tag or digest) of r's repository, checked
// against the digest when ref is one (else against Docker-Content-Digest
// when the agent sent it).
func (c *Client) Manifest(ctx context.Context, r Ref, ref string) (ocispec.Descriptor, []byte, error) {
	resp, err := c.get(ctx, r.Registry, proto.V2ManifestURL(c.Base, r.Repo, ref), http.Header{"Accept": {acceptManifests + ", */*"}})
	if err != nil {
		return ocispec.Descriptor{}, nil, fmt.Errorf("manifest %s: %w", ref, err)
	}
	defer drain(resp.Body)
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxManifest+1))
	if err != nil {
		return ocispec.Descriptor{}, nil, fmt.Errorf("manifest %s: %w", ref, err)
	}
	if len(raw) > maxManifest {
		return ocispec.Descriptor{}, nil, fmt.Errorf("manifest %s: larger than %d bytes", ref, maxManifest)
	}
	got := digest.FromBytes(raw)
	want, err := digest.Parse(ref)
	if err != nil {
		want, _ = digest.Parse(resp.Header.Get(proto.HeaderContentDigest))
	}
	if want != "" && want != got {
		return ocispec.Descriptor{}, nil, fmt.Errorf("manifest %s: %w: got %s", ref, ErrDigestMismatch, got)
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	// artifactType goes into the descriptor too (image-spec: a descriptor
	// of an artifact carries its type), so index.json says what a model is.
	var probe struct {
		MediaType    string `json:"mediaType"`
		ArtifactType string `json:"artifactType"`
		Config       struct {
			MediaType string `json:"mediaType"`
		} `json:"config"`
	}
	desc := ocispec.Descriptor{MediaType: mt, Digest: got, Size: int64(len(raw))}
	if json.Unmarshal(raw, &probe) == nil {
		if probe.MediaType != "" {
			desc.MediaType = probe.MediaType
		}
		desc.ArtifactType = probe.ArtifactType
		if desc.ArtifactType == "" && desc.MediaType == ocispec.MediaTypeImageManifest &&
			probe.Config.MediaType != "" && probe.Config.MediaType != ocispec.MediaTypeImageConfig && probe.Config.MediaType != ocispec.MediaTypeEmptyJSON {
			desc.ArtifactType = probe.Config.MediaType // the older artifact convention
		}
	}
	return desc, raw, nil
}

func isIndex(mt string) bool { return mt == ocispec.MediaTypeImageIndex || mt == mediaDockerList }

func blobPath(dir string, d digest.Digest) string {
	return filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// writeIndex writes oci-layout and index.json (atomically each).
func writeIndex(dir string, roots []ocispec.Descriptor) error {
	lay, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err := writeAtomic(filepath.Join(dir, ocispec.ImageLayoutFile), lay); err != nil {
		return err
	}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: roots}
	idx.SchemaVersion = 2
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(dir, "index.json"), b)
}

func writeAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".partial"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
