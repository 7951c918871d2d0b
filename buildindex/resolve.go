package buildindex

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/buildindex/tagstore"
	"github.com/shoal-dev/shoal/internal/httpx"
)

// lookup answers ns:tag: the stored entry while it is younger than tag_ttl,
// else a fresh resolution (one per tag however many ask at once). If that
// fails for want of a reachable upstream, a stale entry is answered
// (stale = true). An upstream that says the tag does not exist is believed,
// unless the entry was recorded by a PUT (a preheated tag upstream may not
// know).
func (s *Server) lookup(ctx context.Context, ns, tag string) (tagstore.Entry, bool, error) {
	old, err := s.tags.Get(ctx, ns, tag)
	have := err == nil
	if have && s.fresh(old) {
		s.lookups.WithLabelValues("hit").Inc()
		return old, false, nil
	}
	if err != nil && !errors.Is(err, tagstore.ErrNotFound) {
		s.log.Warn("tag store read failed; resolving", "namespace", ns, "tag", tag, "err", err)
	}
	ch := s.resolving.DoChan(ns+"\x00"+tag, func() (any, error) {
		// Shared by every waiter, so not ended by the first one leaving.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ResolveTimeout)
		defer cancel()
		return s.refresh(rctx, ns, tag)
	})
	var res resultOf
	select {
	case r := <-ch:
		res = resultOf{r.Val, r.Err}
	case <-ctx.Done():
		return tagstore.Entry{}, false, ctx.Err()
	}
	if res.err == nil {
		s.lookups.WithLabelValues("resolved").Inc()
		return res.val.(tagstore.Entry), false, nil
	}
	notFound := isNotFound(res.err)
	if have && (!notFound || old.Source == tagstore.SourcePut) {
		s.lookups.WithLabelValues("stale").Inc()
		s.log.Warn("answering a stale tag: resolution failed", "namespace", ns, "tag", tag, "digest", old.Digest,
			"age", s.now().Sub(old.ResolvedAt).Round(time.Second), "err", res.err)
		return old, true, nil
	}
	if notFound {
		s.lookups.WithLabelValues("not_found").Inc()
	} else {
		s.lookups.WithLabelValues("error").Inc()
	}
	return tagstore.Entry{}, false, res.err
}

type resultOf struct {
	val any
	err error
}

func (s *Server) fresh(e tagstore.Entry) bool { return s.now().Sub(e.ResolvedAt) < s.cfg.TagTTL }

// refresh resolves ns:tag and stores the answer; an entry another flight
// refreshed a moment ago is taken as it is.
func (s *Server) refresh(ctx context.Context, ns, tag string) (tagstore.Entry, error) {
	if e, err := s.tags.Get(ctx, ns, tag); err == nil && s.fresh(e) {
		return e, nil
	}
	s.resolutions.Add(1)
	info, err := s.resolve(ctx, ns, tag)
	if err != nil {
		s.resolves.WithLabelValues(map[bool]string{true: "not_found", false: "error"}[isNotFound(err)]).Inc()
		return tagstore.Entry{}, err
	}
	s.resolves.WithLabelValues("ok").Inc()
	e := tagstore.Entry{Digest: info.Digest, MediaType: info.MediaType, Size: info.Size, ResolvedAt: s.now(), Source: tagstore.SourceUpstream}
	if err := s.tags.Put(ctx, ns, tag, e); err != nil {
		// The answer is still right; only the next lookup pays again.
		s.log.Error("store resolved tag", "namespace", ns, "tag", tag, "err", err)
	}
	s.log.Info("resolved tag", "namespace", ns, "tag", tag, "digest", e.Digest)
	return e, nil
}

func isNotFound(err error) bool {
	var he *httpx.Error
	return errors.As(err, &he) && he.Status == http.StatusNotFound
}

// resolve asks the origins, best first on the ring, for the headers of
// manifest ns:tag. A 4xx answer is final; any other failure moves on to the
// next origin.
func (s *Server) resolve(ctx context.Context, ns, tag string) (tagInfo, error) {
	origins := s.origins.Pick(ns+":"+tag, 0)
	var errs []error
	for i, o := range origins {
		info, err := s.headManifest(ctx, o, ns, tag, len(origins)-i)
		if err == nil {
			return info, nil
		}
		var he *httpx.Error
		if errors.As(err, &he) && he.Status < 500 {
			return tagInfo{}, he
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return tagInfo{}, httpx.Wrap(errors.Join(errs...), http.StatusBadGateway, httpx.CodeUnavailable,
		fmt.Sprintf("no origin could resolve %s:%s", ns, tag))
}

// headManifest sends HEAD {origin}/namespace/{ns}/manifests/{tag}, giving it
// an equal share of the time left among the origins still to try.
func (s *Server) headManifest(ctx context.Context, origin, ns, tag string, left int) (tagInfo, error) {
	if dl, ok := ctx.Deadline(); ok && left > 1 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Until(dl)/time.Duration(left))
		defer cancel()
	}
	u := fmt.Sprintf("%s/namespace/%s/manifests/%s", origin, url.PathEscape(ns), tag)
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		return tagInfo{}, err
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return tagInfo{}, fmt.Errorf("origin %s: %w", origin, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		// The origin's reason (a registry it is not configured for, say)
		// comes in httpx.HeaderError; without it, one by status.
		he := httpx.DecodeError(resp)
		switch {
		case resp.StatusCode == http.StatusNotFound && (he.Code == "UNKNOWN" || he.Code == httpx.CodeManifestUnknown):
			return tagInfo{}, httpx.Errorf(http.StatusNotFound, httpx.CodeManifestUnknown, "manifest %s:%s unknown to upstream", ns, tag)
		case he.Code != "UNKNOWN":
			return tagInfo{}, he
		}
		return tagInfo{}, httpx.Errorf(resp.StatusCode, httpx.CodeManifestInvalid, "origin refused %s:%s: %s", ns, tag, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return tagInfo{}, fmt.Errorf("origin %s: HEAD %s:%s: %s", origin, ns, tag, resp.Status)
	}
	info := tagInfo{Digest: digest.Digest(resp.Header.Get("Docker-Content-Digest")), MediaType: resp.Header.Get("Content-Type"), Size: resp.ContentLength}
	if err := checkTagInfo(info); err != nil {
		// %v: the origin's fault, not the client's, so no 4xx passes on.
		return tagInfo{}, fmt.Errorf("origin %s: HEAD %s:%s: %v", origin, ns, tag, err)
	}
	return info, nil
}

// handleList answers the upstream's tags of ns (through an origin) merged
// with the tags known here; when no origin answers, the known tags alone.
func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	ns, err := nsParam(r)
	if err != nil {
		httpx.WriteError(w, r, err)
		return
	}
	known, err := s.tags.List(r.Context(), ns)
	if err != nil {
		s.log.Warn("tag store list failed", "namespace", ns, "err", err)
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ResolveTimeout)
	defer cancel()
	remote, err := s.listTags(ctx, ns)
	if err != nil {
		if len(known) == 0 {
			httpx.WriteError(w, r, err)
			return
		}
		if !isNotFound(err) {
			s.log.Warn("answering known tags only: origins failed", "namespace", ns, "err", err)
		}
	}
	tags := append(remote, known...)
	slices.Sort(tags)
	tags = slices.Compact(tags)
	if tags == nil {
		tags = []string{}
	}
	writeJSON(w, http.StatusOK, struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{ns, tags})
}

// listTags asks the origins, best first for ns, for the upstream's tags.
func (s *Server) listTags(ctx context.Context, ns string) ([]string, error) {
	var errs []error
	for _, o := range s.origins.Pick(ns, 0) {
		tags, err := s.getTags(ctx, o, ns)
		if err == nil {
			return tags, nil
		}
		var he *httpx.Error
		if errors.As(err, &he) && he.Status < 500 {
			return nil, he
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, httpx.Wrap(errors.Join(errs...), http.StatusBadGateway, httpx.CodeUnavailable,
		fmt.Sprintf("no origin could list the tags of %s", ns))
}

func (s *Server) getTags(ctx context.Context, origin, ns string) ([]string, error) {
	u := fmt.Sprintf("%s/namespace/%s/tags/list", origin, url.PathEscape(ns))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("origin %s: %w", origin, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		he := httpx.DecodeError(resp)
		if he.Status >= 500 {
			return nil, fmt.Errorf("origin %s: tags of %s: %w", origin, ns, he)
		}
		return nil, he
	}
	var list struct {
		Tags []string `json:"tags"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&list); err != nil {
		return nil, fmt.Errorf("origin %s: tags of %s: %w", origin, ns, err)
	}
	return list.Tags, nil
}
