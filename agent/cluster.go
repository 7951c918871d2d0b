package agent

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/hashring"
	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/tlsconf"
	"github.com/shoal-dev/shoal/proto"
)

// maxManifest bounds a manifest body (the distribution registry's own limit
// is 4 MiB).
const maxManifest = proto.MaxManifest

// clusterClient talks to the origins (manifests by digest) and the
// build-index (tags), trying the next server when one fails (proto's
// failover rule).
type clusterClient struct {
	origins    *hashring.Ring
	buildIndex []string
	origin     proto.OriginClient
	index      proto.BuildIndexClient
}

// manifestInfo is what the build-index knows of a tag, or what a manifest
// response says of itself.
type manifestInfo = proto.TagInfo

// resolveTag asks the build-index for the digest of ns:tag; without a
// build-index, the origin that owns the namespace answers a HEAD.
func (c *clusterClient) resolveTag(ctx context.Context, ns, tag string) (manifestInfo, error) {
	if len(c.buildIndex) == 0 {
		return c.headManifest(ctx, ns, tag)
	}
	return proto.Failover(ctx, c.buildIndex, proto.Policy{}, func(ctx context.Context, bi string) (manifestInfo, error) {
		return c.index.Tag(ctx, bi, ns, tag)
	})
}

// headManifest asks an origin for the headers of ns's manifest ref.
func (c *clusterClient) headManifest(ctx context.Context, ns, ref string) (manifestInfo, error) {
	return proto.Failover(ctx, c.origins.Pick(ns, 0), proto.Policy{}, func(ctx context.Context, o string) (manifestInfo, error) {
		mi, err := c.origin.HeadManifest(ctx, o, ns, ref)
		var he *httpx.Error
		if errors.As(err, &he) && he.Code == httpx.CodeUnknown {
			// No body, and no httpx.HeaderError (a server of an older version).
			he.Code = codeForStatus(he.Status)
		}
		return mi, err
	})
}

// fetchManifest gets manifest d of ns from the origin that owns d and checks
// it against d.
func (c *clusterClient) fetchManifest(ctx context.Context, ns string, d digest.Digest) ([]byte, string, error) {
	type manifest struct {
		body      []byte
		mediaType string
	}
	m, err := proto.Failover(ctx, c.origins.Pick(d.String(), 0), proto.Policy{}, func(ctx context.Context, o string) (manifest, error) {
		body, mt, err := c.origin.Manifest(ctx, o, ns, d)
		return manifest{body, mt}, err
	})
	return m.body, m.mediaType, err
}

// listTags returns every tag of ns the build-index knows or can list;
// without a build-index, the origin that owns the namespace lists them.
func (c *clusterClient) listTags(ctx context.Context, ns string) ([]string, error) {
	if len(c.buildIndex) == 0 {
		return proto.Failover(ctx, c.origins.Pick(ns, 0), proto.Policy{}, func(ctx context.Context, o string) ([]string, error) {
			return c.origin.Tags(ctx, o, ns)
		})
	}
	return proto.Failover(ctx, c.buildIndex, proto.Policy{}, func(ctx context.Context, bi string) ([]string, error) {
		return c.index.Tags(ctx, bi, ns)
	})
}

func codeForStatus(status int) string {
	switch status {
	case http.StatusNotFound:
		return httpx.CodeManifestUnknown
	case http.StatusBadRequest:
		return httpx.CodeManifestInvalid
	}
	return httpx.CodeUnavailable
}

func newClusterClient(origins, buildIndex []string, tc *tlsconf.Source) *clusterClient {
	hc := proto.Client{HTTP: &http.Client{Timeout: 2 * time.Minute, Transport: tc.Transport(&http.Transport{MaxIdleConnsPerHost: 8})}}
	return &clusterClient{
		origins:    hashring.New(origins),
		buildIndex: buildIndex,
		origin:     proto.OriginClient{Client: hc},
		index:      proto.BuildIndexClient{Client: hc},
	}
}
