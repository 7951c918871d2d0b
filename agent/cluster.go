package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/hashring"
	"github.com/shoal-dev/shoal/internal/httpx"
)

// maxManifest bounds a manifest body (the distribution registry's own limit
// is 4 MiB).
const maxManifest = 4 << 20

// clusterClient talks to the origins (manifests by digest) and the
// build-index (tags), trying the next server when one fails.
type clusterClient struct {
	origins    *hashring.Ring
	buildIndex []string
	hc         *http.Client
}

// manifestInfo is what the build-index knows of a tag, or what a manifest
// response says of itself.
type manifestInfo struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"media_type"`
	Size      int64         `json:"size"`
}

// resolveTag asks the build-index for the digest of ns:tag; without a
// build-index, the origin that owns the namespace answers a HEAD.
func (c *clusterClient) resolveTag(ctx context.Context, ns, tag string) (manifestInfo, error) {
	if len(c.buildIndex) == 0 {
		return c.headManifest(ctx, ns, tag)
	}
	var errs []error
	for _, bi := range c.buildIndex {
		u := fmt.Sprintf("%s/namespace/%s/tags/%s", bi, url.PathEscape(ns), url.PathEscape(tag))
		var mi manifestInfo
		err := c.getJSON(ctx, u, &mi)
		var he *httpx.Error
		if errors.As(err, &he) && he.Status < 500 {
			return mi, he
		}
		if err == nil {
			if verr := mi.Digest.Validate(); verr != nil {
				err = fmt.Errorf("build-index %s: bad digest for %s:%s: %w", bi, ns, tag, verr)
			} else {
				return mi, nil
			}
		}
		errs = append(errs, err)
	}
	return manifestInfo{}, errors.Join(errs...)
}

// headManifest asks an origin for the headers of ns's manifest ref.
func (c *clusterClient) headManifest(ctx context.Context, ns, ref string) (manifestInfo, error) {
	var errs []error
	for _, o := range c.origins.Pick(ns, 0) {
		u := fmt.Sprintf("%s/namespace/%s/manifests/%s", o, url.PathEscape(ns), ref)
		resp, err := c.do(ctx, http.MethodHead, u)
		if err != nil {
			var he *httpx.Error
			if errors.As(err, &he) && he.Status < 500 {
				return manifestInfo{}, he // every origin would say the same
			}
			errs = append(errs, err)
			continue
		}
		resp.Body.Close()
		d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
		if err != nil {
			errs = append(errs, fmt.Errorf("origin %s: manifest %s: bad Docker-Content-Digest: %w", o, ref, err))
			continue
		}
		return manifestInfo{Digest: d, MediaType: resp.Header.Get("Content-Type"), Size: resp.ContentLength}, nil
	}
	return manifestInfo{}, errors.Join(errs...)
}

// fetchManifest gets manifest d of ns from the origin that owns d and checks
// it against d.
func (c *clusterClient) fetchManifest(ctx context.Context, ns string, d digest.Digest) ([]byte, string, error) {
	var errs []error
	for _, o := range c.origins.Pick(d.String(), 0) {
		u := fmt.Sprintf("%s/namespace/%s/manifests/%s", o, url.PathEscape(ns), d)
		resp, err := c.do(ctx, http.MethodGet, u)
		if err != nil {
			var he *httpx.Error
			if errors.As(err, &he) && he.Status < 500 {
				return nil, "", he
			}
			errs = append(errs, err)
			continue
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifest+1))
		resp.Body.Close()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("origin %s: manifest %s: %w", o, d, err))
		case len(body) > maxManifest:
			errs = append(errs, fmt.Errorf("origin %s: manifest %s is larger than %d bytes", o, d, maxManifest))
		case digest.FromBytes(body) != d:
			errs = append(errs, fmt.Errorf("origin %s: manifest %s: body does not match the digest", o, d))
		default:
			return body, resp.Header.Get("Content-Type"), nil
		}
	}
	return nil, "", errors.Join(errs...)
}

// listTags returns every tag of ns the build-index knows or can list.
func (c *clusterClient) listTags(ctx context.Context, ns string) ([]string, error) {
	var errs []error
	var list struct {
		Tags []string `json:"tags"`
	}
	servers := c.buildIndex
	path := "/namespace/%s/tags"
	if len(servers) == 0 {
		servers, path = c.origins.Pick(ns, 0), "/namespace/%s/tags/list"
	}
	for _, s := range servers {
		err := c.getJSON(ctx, s+fmt.Sprintf(path, url.PathEscape(ns)), &list)
		if err == nil {
			return list.Tags, nil
		}
		var he *httpx.Error
		if errors.As(err, &he) && he.Status < 500 {
			return nil, he
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func (c *clusterClient) getJSON(ctx context.Context, u string, v any) error {
	resp, err := c.do(ctx, http.MethodGet, u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(v); err != nil {
		return fmt.Errorf("%s: %w", u, err)
	}
	return nil
}

// do sends a request; a non-2xx answer becomes an *httpx.Error carrying the
// server's OCI code (so 404 MANIFEST_UNKNOWN reaches the client as such).
func (c *clusterClient) do(ctx context.Context, method, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		he := httpx.DecodeError(resp)
		if method == http.MethodHead && he.Code == "UNKNOWN" {
			// No body, and no httpx.HeaderError (a server of an older version).
			he.Code = codeForStatus(resp.StatusCode)
		}
		return nil, he
	}
	return resp, nil
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

func newClusterClient(origins, buildIndex []string) *clusterClient {
	return &clusterClient{
		origins:    hashring.New(origins),
		buildIndex: buildIndex,
		hc:         &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 8}},
	}
}
