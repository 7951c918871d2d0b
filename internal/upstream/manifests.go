package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/proto"
)

// ManifestAccept is the Accept header of manifest requests: every manifest
// and index type a container runtime pulls. Without it a registry may
// convert (or refuse) what it serves.
var ManifestAccept = strings.Join([]string{
	string(types.OCIManifestSchema1),
	string(types.OCIImageIndex),
	string(types.DockerManifestSchema2),
	string(types.DockerManifestList),
}, ", ")

// MaxManifestSize bounds a manifest body (distribution's own limit).
const MaxManifestSize = 4 << 20

// ErrManifestTooLarge: the upstream's manifest exceeds MaxManifestSize.
var ErrManifestTooLarge = errors.New("upstream: manifest too large")

// maxTagPages bounds the Link pages followed for one tag list.
const maxTagPages = 1000

// Descriptor is what a manifest response says of itself.
type Descriptor struct {
	Digest    digest.Digest // empty if the upstream sent no Docker-Content-Digest
	MediaType string
	Size      int64 // -1 if unknown
}

// HeadManifest asks the upstream for the headers of manifest ref (a tag
// or a digest) of r, without its body.
func (c *Client) HeadManifest(ctx context.Context, r Repo, ref string) (Descriptor, error) {
	resp, err := c.request(ctx, http.MethodHead, r, "manifests/"+ref, http.Header{"Accept": {ManifestAccept}}, "manifest "+ref)
	if err != nil {
		return Descriptor{}, err
	}
	resp.Body.Close()
	return descriptorOf(resp, r, ref)
}

// GetManifest fetches manifest ref of r, at most MaxManifestSize bytes. The
// caller verifies the body against the digest it expects: the upstream's
// Docker-Content-Digest header is only a claim.
func (c *Client) GetManifest(ctx context.Context, r Repo, ref string) ([]byte, Descriptor, error) {
	resp, err := c.request(ctx, http.MethodGet, r, "manifests/"+ref, http.Header{"Accept": {ManifestAccept}}, "manifest "+ref)
	if err != nil {
		return nil, Descriptor{}, err
	}
	defer resp.Body.Close()
	if resp.ContentLength > MaxManifestSize {
		return nil, Descriptor{}, fmt.Errorf("upstream %s: manifest %s: %w (%d bytes, limit %d)", r, ref, ErrManifestTooLarge, resp.ContentLength, MaxManifestSize)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxManifestSize+1))
	if err != nil {
		return nil, Descriptor{}, fmt.Errorf("upstream %s: manifest %s: %w", r, ref, err)
	}
	if len(body) > MaxManifestSize {
		return nil, Descriptor{}, fmt.Errorf("upstream %s: manifest %s: %w (limit %d)", r, ref, ErrManifestTooLarge, MaxManifestSize)
	}
	desc, err := descriptorOf(resp, r, ref)
	if err != nil {
		return nil, Descriptor{}, err
	}
	desc.Size = int64(len(body))
	if desc.MediaType == "" {
		desc.MediaType = mediaTypeOf(body)
	}
	return body, desc, nil
}

func descriptorOf(resp *http.Response, r Repo, ref string) (Descriptor, error) {
	desc := Descriptor{Size: resp.ContentLength, MediaType: manifestType(resp.Header.Get("Content-Type"))}
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" {
		d, err := digest.Parse(h)
		if err != nil {
			return Descriptor{}, fmt.Errorf("upstream %s: manifest %s: bad Docker-Content-Digest %q: %w", r, ref, h, err)
		}
		desc.Digest = d
	}
	return desc, nil
}

// manifestType is the media type of a Content-Type header, or "" when the
// header says nothing specific (then the body's mediaType field decides).
func manifestType(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt == "application/json" || mt == "text/plain" || mt == "application/octet-stream" {
		return ""
	}
	return mt
}

// mediaTypeOf reads a manifest's own mediaType field; an OCI manifest may
// omit it, and then the presence of "manifests" tells an index apart.
func mediaTypeOf(body []byte) string {
	var m struct {
		MediaType string            `json:"mediaType"`
		Manifests []json.RawMessage `json:"manifests"`
	}
	if err := json.Unmarshal(body, &m); err == nil && m.MediaType != "" {
		return m.MediaType
	}
	if m.Manifests != nil {
		return string(types.OCIImageIndex)
	}
	return string(types.OCIManifestSchema1)
}

// ListTags returns every tag of r, following the upstream's Link pagination.
func (c *Client) ListTags(ctx context.Context, r Repo) ([]string, error) {
	next := "tags/list"
	var tags []string
	for range maxTagPages {
		resp, err := c.request(ctx, http.MethodGet, r, next, http.Header{"Accept": {"application/json"}}, "tag list")
		if err != nil {
			return nil, err
		}
		var page proto.TagList
		err = json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&page)
		link := resp.Header.Get("Link")
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("upstream %s: tag list: %w", r, err)
		}
		tags = append(tags, page.Tags...)
		if next, err = nextPage(link, c.apiBase(r)); err != nil {
			return nil, fmt.Errorf("upstream %s: tag list: %w", r, err)
		}
		if next == "" {
			return tags, nil
		}
	}
	return nil, fmt.Errorf("upstream %s: tag list: more than %d pages", r, maxTagPages)
}

// nextPage turns a Link header (`</v2/x/tags/list?last=a&n=1>; rel="next"`)
// into a path relative to base ("tags/list?last=a&n=1"), or "" at the end.
// A link that leaves the repository is refused: it would carry our
// credentials elsewhere.
func nextPage(link, base string) (string, error) {
	if link == "" {
		return "", nil
	}
	start, end := strings.IndexByte(link, '<'), strings.IndexByte(link, '>')
	if start < 0 || end < start || !strings.Contains(link[end:], `rel="next"`) {
		return "", nil
	}
	b, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	u, err := b.Parse(link[start+1 : end])
	if err != nil {
		return "", fmt.Errorf("bad Link %q: %w", link, err)
	}
	rel, ok := strings.CutPrefix(u.String(), base)
	if !ok || !strings.HasPrefix(rel, "tags/list") {
		return "", fmt.Errorf("Link %q leaves %s", link, base)
	}
	return rel, nil
}

// apiBase is "<scheme>://<host>/v2/<repo>/".
func (c *Client) apiBase(r Repo) string {
	return fmt.Sprintf("%s://%s/v2/%s/", r.reg.scheme, r.reg.name.RegistryStr(), r.Path)
}

// request sends method to apiBase(r)+path over r's authenticated
// transport with headers hdr; what names the object in errors ("manifest
// latest"). 200 is success, and 206 when hdr asks for a Range.
func (c *Client) request(ctx context.Context, method string, r Repo, path string, hdr http.Header, what string) (*http.Response, error) {
	auth := Authorization(ctx)
	var t http.RoundTripper
	if auth != "" {
		// The caller's credentials for this request alone: no token
		// exchange, nothing cached.
		t = c.baseFor(r.reg)
	} else {
		var err error
		if t, err = c.transport(ctx, r); err != nil {
			return nil, fmt.Errorf("upstream %s: %w", r, err)
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, c.apiBase(r)+path, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if auth != "" {
		// net/http drops it on a redirect to another host (object storage).
		req.Header.Set("Authorization", auth)
	}
	resp, err := (&http.Client{Transport: t}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %s %s: %w", r, method, what, classify(err))
	}
	switch {
	case resp.StatusCode == http.StatusOK, hdr.Get("Range") != "" && resp.StatusCode == http.StatusPartialContent:
		return resp, nil
	case resp.StatusCode == http.StatusNotFound:
		resp.Body.Close()
		return nil, fmt.Errorf("upstream %s: %s: %w", r, what, ErrNotFound)
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		resp.Body.Close()
		if auth == "" {
			c.transports.Remove(r.Host + "/" + r.Path) // a token may have expired
		}
		return nil, fmt.Errorf("upstream %s: %s: %w (%s)", r, what, ErrUnauthorized, resp.Status)
	default:
		resp.Body.Close()
		return nil, fmt.Errorf("upstream %s: %s %s: %s", r, method, what, resp.Status)
	}
}

type authKey struct{}

// WithAuthorization returns a context under which upstream requests send
// the Authorization value v (e.g. "Bearer ..." that Harbor gave a preheat
// job) instead of the configured credentials. v is never logged.
func WithAuthorization(ctx context.Context, v string) context.Context {
	if v == "" {
		return ctx
	}
	return context.WithValue(ctx, authKey{}, v)
}

// Authorization is the value WithAuthorization put in ctx, or "".
func Authorization(ctx context.Context) string {
	v, _ := ctx.Value(authKey{}).(string)
	return v
}
