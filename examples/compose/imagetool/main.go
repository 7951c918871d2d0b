// Command imagetool loads Shoal's deterministic sample image into a registry
// and pulls it back through an agent, checking every blob:
//
//	imagetool push --registry 127.0.0.1:7690 [--repo shoal/demo --tag latest --layers 3 --layer-size 16MiB]
//	imagetool pull --ref 127.0.0.1:7651/shoal/demo:latest [--layers 3 --layer-size 16MiB]
//	               [--cacert CA --cert CERT --key KEY]   (an https agent, mutual TLS)
//	imagetool certs --dir DIR --names tracker,origin1,...,127.0.0.1
//
// The image is rebuilt from the same flags on both sides (same flags, same
// digests), so pull needs no state from push: it checks that the tag
// resolves to the expected manifest digest and that the config and every
// layer hash to the digests and sizes the image must have.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/internal/tlsconf"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

const usage = `usage:
  imagetool push --registry HOST:PORT [--repo R] [--tag T] [--layers N] [--layer-size S] [--seed N]
  imagetool pull --ref HOST:PORT/REPO:TAG [--layers N] [--layer-size S] [--seed N] [--cacert F --cert F --key F]
  imagetool certs --dir DIR --names NAME,... [--rotate]
  imagetool serial (--addr HOST:PORT [--cacert F --cert F --key F] | --file CERT.pem)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var err error
	switch os.Args[1] {
	case "push":
		err = push(ctx, os.Args[2:])
	case "pull":
		err = pull(ctx, os.Args[2:])
	case "certs":
		err = certs(os.Args[2:])
	case "serial":
		err = serial(os.Args[2:])
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "imagetool %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// image holds the flags that define the sample image.
type image struct {
	layers int
	size   string
	seed   uint64
}

func (im *image) flags(fs *flag.FlagSet) {
	fs.IntVar(&im.layers, "layers", 3, "layers in the sample image")
	fs.StringVar(&im.size, "layer-size", "16MiB", "size of each layer")
	fs.Uint64Var(&im.seed, "seed", 1, "seed of the layers' pseudo-random content")
}

func (im *image) build() (v1.Image, error) {
	size, err := config.ParseByteSize(im.size)
	if err != nil {
		return nil, fmt.Errorf("--layer-size: %w", err)
	}
	if im.layers < 1 || im.layers > 64 || size < 1 || size > 1<<30 {
		return nil, fmt.Errorf("want 1..64 layers of 1B..1GiB, got %d of %s", im.layers, im.size)
	}
	return localregistry.SampleImage(im.layers, int64(size), im.seed)
}

func push(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("push", flag.ContinueOnError)
	reg := fs.String("registry", "127.0.0.1:7690", "registry host:port (plain HTTP)")
	repo := fs.String("repo", "shoal/demo", "repository")
	tag := fs.String("tag", "latest", "tag")
	var im image
	im.flags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	img, err := im.build()
	if err != nil {
		return err
	}
	ref, err := name.NewTag(fmt.Sprintf("%s/%s:%s", *reg, *repo, *tag), name.Insecure)
	if err != nil {
		return err
	}
	// The registry may still be starting: retry for a while.
	deadline := time.Now().Add(60 * time.Second)
	for {
		err = remote.Write(ref, img, remote.WithContext(ctx))
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	d, _ := img.Digest()
	m, _ := img.Manifest()
	var total int64
	for _, l := range m.Layers {
		total += l.Size
	}
	fmt.Printf("pushed %s@%s (%d layers, %d bytes)\n", ref, d, len(m.Layers), total+m.Config.Size)
	return nil
}

func pull(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("pull", flag.ContinueOnError)
	refStr := fs.String("ref", "", "image reference to pull by tag, e.g. 127.0.0.1:7651/shoal/demo:latest")
	timeout := fs.Duration("timeout", 5*time.Minute, "bound on the whole pull")
	var tc tlsconf.Config
	fs.StringVar(&tc.CA, "cacert", "", "CA bundle of an https agent (then the pull is over https)")
	fs.StringVar(&tc.Cert, "cert", "", "client certificate (mutual TLS)")
	fs.StringVar(&tc.Key, "key", "", "the client certificate's key")
	var im image
	im.flags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *refStr == "" {
		return errors.New("--ref is required")
	}
	if tc.CA != "" {
		src, err := tlsconf.New(tc, "", nil)
		if err != nil {
			return err
		}
		client, scheme = &http.Client{Transport: src.Transport(&http.Transport{})}, "https"
	}
	want, err := im.build()
	if err != nil {
		return err
	}
	ref, err := name.ParseReference(*refStr, name.Insecure)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	start := time.Now()

	manifest, err := getManifest(ctx, ref)
	if err != nil {
		return fmt.Errorf("manifest %s: %w", ref, err)
	}
	wantDigest, _ := want.Digest()
	if got := (v1.Hash{Algorithm: "sha256", Hex: sha256Hex(manifest)}); got != wantDigest {
		return fmt.Errorf("%s: manifest body hashes to %s, want %s", ref, got, wantDigest)
	}
	m, err := want.Manifest()
	if err != nil {
		return err
	}
	blobs := append([]v1.Descriptor{m.Config}, m.Layers...)
	var total int64
	for _, b := range blobs {
		n, err := fetchBlob(ctx, ref, b)
		if err != nil {
			return err
		}
		total += n
	}
	fmt.Printf("pulled %s@%s: manifest + %d blobs, %d bytes, every digest verified, %.2fs\n",
		ref, wantDigest, len(blobs), total, time.Since(start).Seconds())
	return nil
}

// client and scheme reach the agent: plain HTTP, or https with --cacert.
var (
	client = http.DefaultClient
	scheme = "http"
)

// getManifest GETs the manifest ref names, by tag (the sample image is an
// OCI manifest; its body is checked against the expected digest).
func getManifest(ctx context.Context, ref name.Reference) ([]byte, error) {
	u := fmt.Sprintf("%s://%s/v2/%s/manifests/%s", scheme, ref.Context().RegistryStr(), ref.Context().RepositoryStr(), ref.Identifier())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %.512s", resp.Status, body)
	}
	return body, nil
}

// fetchBlob GETs one blob from the registry and checks its size and sha256
// itself (go-containerregistry would too; this makes the check explicit).
func fetchBlob(ctx context.Context, ref name.Reference, b v1.Descriptor) (int64, error) {
	u := fmt.Sprintf("%s://%s/v2/%s/blobs/%s", scheme, ref.Context().RegistryStr(), ref.Context().RepositoryStr(), b.Digest)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", b.Digest, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("blob %s: %s: %s", b.Digest, resp.Status, body)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return n, fmt.Errorf("blob %s: after %d bytes: %w", b.Digest, n, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != b.Digest.Hex || n != b.Size {
		return n, fmt.Errorf("blob %s: got %d bytes hashing to sha256:%s, want %d bytes", b.Digest, n, got, b.Size)
	}
	return n, nil
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
