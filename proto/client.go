package proto

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/opencontainers/go-digest"
)

// maxJSON bounds a JSON answer (a tag list of a very busy repository).
const maxJSON = 16 << 20

// MaxManifest bounds a manifest body (the distribution registry's limit).
const MaxManifest = 4 << 20

// Client sends one request to one server of a role. Every method answers a
// transport failure as "<role> <server>: <err>" and a non-2xx answer as the
// server's *Error (decoded from its OCI error body, or from HeaderError for
// HEAD), so that Failover can tell a final 4xx from an outage. Use the
// methods inside Failover to ask several servers.
type Client struct {
	HTTP *http.Client
	// Header is sent with every request (the upstream Authorization of a
	// preheat job).
	Header http.Header
}

// OriginClient asks origins.
type OriginClient struct{ Client }

// TrackerClient asks trackers.
type TrackerClient struct{ Client }

// BuildIndexClient asks build-indexes.
type BuildIndexClient struct{ Client }

// Do sends method to u and returns the 2xx response; role and server name
// the other side in errors.
func (c Client) Do(ctx context.Context, role, server, method, u string, h http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", role, server, err)
	}
	for k, v := range c.Header {
		req.Header[k] = v
	}
	for k, v := range h {
		req.Header[k] = v
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", role, server, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		he := DecodeError(resp)
		if he.Status >= 400 && he.Status < 500 {
			return nil, he // an answer, passed on as it is
		}
		return nil, fmt.Errorf("%s %s: %w", role, server, he)
	}
	return resp, nil
}

// readAll reads at most max bytes of resp's body and closes it.
func readAll(resp *http.Response, max int64) ([]byte, error) {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err == nil && int64(len(body)) > max {
		err = fmt.Errorf("larger than %d bytes", max)
	}
	return body, err
}

func (c Client) getJSON(ctx context.Context, role, server, u string, v any) error {
	resp, err := c.Do(ctx, role, server, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSON)).Decode(v); err != nil {
		return fmt.Errorf("%s %s: %s: %w", role, server, u, err)
	}
	return nil
}

// HeadManifest asks origin for the headers of manifest ref (a tag or a
// digest) of ns. A 2xx answer without a valid Docker-Content-Digest is an
// error that is not final.
func (c OriginClient) HeadManifest(ctx context.Context, origin, ns, ref string) (TagInfo, error) {
	resp, err := c.Do(ctx, "origin", origin, http.MethodHead, ManifestURL(origin, ns, ref), nil)
	if err != nil {
		return TagInfo{}, err
	}
	resp.Body.Close()
	d, err := digest.Parse(resp.Header.Get(HeaderContentDigest))
	if err != nil {
		// %v: the origin's fault, not the client's.
		return TagInfo{}, fmt.Errorf("origin %s: manifest %s of %s: bad %s: %v", origin, ref, ns, HeaderContentDigest, err)
	}
	return TagInfo{Digest: d, MediaType: resp.Header.Get("Content-Type"), Size: resp.ContentLength}, nil
}

// Manifest gets manifest d of ns from origin, checked against d, and its
// media type.
func (c OriginClient) Manifest(ctx context.Context, origin, ns string, d digest.Digest) ([]byte, string, error) {
	resp, err := c.Do(ctx, "origin", origin, http.MethodGet, ManifestURL(origin, ns, d.String()), nil)
	if err != nil {
		return nil, "", err
	}
	body, err := readAll(resp, MaxManifest)
	switch {
	case err != nil:
		return nil, "", fmt.Errorf("origin %s: manifest %s: %v", origin, d, err)
	case digest.FromBytes(body) != d:
		return nil, "", fmt.Errorf("origin %s: manifest %s: body does not match the digest", origin, d)
	}
	return body, resp.Header.Get("Content-Type"), nil
}

// Tags gets the upstream's tag list of ns from origin.
func (c OriginClient) Tags(ctx context.Context, origin, ns string) ([]string, error) {
	var list TagList
	err := c.getJSON(ctx, "origin", origin, OriginTagsURL(origin, ns), &list)
	return list.Tags, err
}

// BlobFile gets the live metainfo or the standard torrent of blob d of ns
// from origin, at most max bytes, checked to be a bencoded dictionary.
func (c OriginClient) BlobFile(ctx context.Context, origin string, kind BlobFile, ns string, d digest.Digest, max int64) ([]byte, error) {
	return getBencoded(ctx, c.Client, "origin", origin, BlobFileURL(origin, kind, ns, d), max)
}

// Pieces asks origin for the piece hashes of kind hash ("" for SHA-1) of
// blob d of ns from piece from on; the caller reads (HeaderPieceLength,
// HeaderPieceHash, then an entry a piece) and closes the body.
func (c OriginClient) Pieces(ctx context.Context, origin, ns string, d digest.Digest, from int, hash string) (*http.Response, error) {
	u := PiecesURL(origin, ns, d, from)
	if hash != "" {
		u += "&" + QueryHash + "=" + url.QueryEscape(hash)
	}
	return c.Do(ctx, "origin", origin, http.MethodGet, u, nil)
}

// Metainfo gets the live metainfo of blob d of ns from tracker, at most
// max bytes.
func (c TrackerClient) Metainfo(ctx context.Context, tracker, ns string, d digest.Digest, max int64) ([]byte, error) {
	return getBencoded(ctx, c.Client, "tracker", tracker, MetainfoURL(tracker, ns, d), max)
}

func getBencoded(ctx context.Context, c Client, role, server, u string, max int64) ([]byte, error) {
	resp, err := c.Do(ctx, role, server, http.MethodGet, u, http.Header{"Accept": {ContentTypeTorrent}})
	if err != nil {
		return nil, err
	}
	body, err := readAll(resp, max)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %s: %w", role, server, u, err)
	}
	// A cheap shape check; the caller parses the rest.
	if len(body) < 2 || body[0] != 'd' || body[len(body)-1] != 'e' {
		return nil, fmt.Errorf("%s %s: %s: not a bencoded dictionary", role, server, u)
	}
	return body, nil
}

// Tag asks a build-index for what it knows of ns:tag. An answer without a
// valid digest is an error that is not final.
func (c BuildIndexClient) Tag(ctx context.Context, server, ns, tag string) (TagInfo, error) {
	var ti TagInfo
	if err := c.getJSON(ctx, "build-index", server, TagURL(server, ns, tag), &ti); err != nil {
		return TagInfo{}, err
	}
	if err := ti.Digest.Validate(); err != nil {
		return TagInfo{}, fmt.Errorf("build-index %s: bad digest for %s:%s: %v", server, ns, tag, err)
	}
	return ti, nil
}

// Tags asks a build-index for the tags of ns.
func (c BuildIndexClient) Tags(ctx context.Context, server, ns string) ([]string, error) {
	var list TagList
	err := c.getJSON(ctx, "build-index", server, TagsURL(server, ns), &list)
	return list.Tags, err
}

// AsError returns the *Error in err's chain.
func AsError(err error) (*Error, bool) {
	var he *Error
	ok := errors.As(err, &he)
	return he, ok
}
