package buildindex

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/shoal-dev/shoal/buildindex/tagstore"
	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/proto"
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

func isNotFound(err error) bool { return proto.IsNotFound(err) }

// resolve asks the origins, best first on the ring, for the headers of
// manifest ns:tag, by proto's failover rule: a 4xx answer is final; any
// other failure moves on to the next origin, each given an equal share of
// the time left.
func (s *Server) resolve(ctx context.Context, ns, tag string) (tagInfo, error) {
	oc := proto.OriginClient{Client: proto.Client{HTTP: s.hc}}
	info, err := proto.Failover(ctx, s.origins.Pick(ns+":"+tag, 0), proto.Policy{SplitDeadline: true},
		func(ctx context.Context, origin string) (tagInfo, error) {
			info, err := oc.HeadManifest(ctx, origin, ns, tag)
			if err != nil {
				return tagInfo{}, headErr(err, ns, tag)
			}
			if err := checkTagInfo(info); err != nil {
				// %v: the origin's fault, not the client's, so no 4xx passes on.
				return tagInfo{}, fmt.Errorf("origin %s: HEAD %s:%s: %v", origin, ns, tag, err)
			}
			return info, nil
		})
	if err == nil {
		return info, nil
	}
	if he, final := (proto.Policy{}).Final(err); final {
		return tagInfo{}, he
	}
	return tagInfo{}, httpx.Wrap(err, http.StatusBadGateway, httpx.CodeUnavailable,
		fmt.Sprintf("no origin could resolve %s:%s", ns, tag))
}

// headErr gives an origin's 4xx answer to HEAD its reason: the origin's own
// (a registry it is not configured for, say) from httpx.HeaderError, else
// one by status.
func headErr(err error, ns, tag string) error {
	he, final := (proto.Policy{}).Final(err)
	switch {
	case !final:
		return err
	case he.Status == http.StatusNotFound && (he.Code == httpx.CodeUnknown || he.Code == httpx.CodeManifestUnknown):
		return httpx.Errorf(http.StatusNotFound, httpx.CodeManifestUnknown, "manifest %s:%s unknown to upstream", ns, tag)
	case he.Code != httpx.CodeUnknown:
		return he
	}
	return httpx.Errorf(he.Status, httpx.CodeManifestInvalid, "origin refused %s:%s: %s", ns, tag, he.Message)
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
	writeJSON(w, http.StatusOK, proto.TagList{Name: ns, Tags: tags})
}

// listTags asks the origins, best first for ns, for the upstream's tags.
func (s *Server) listTags(ctx context.Context, ns string) ([]string, error) {
	oc := proto.OriginClient{Client: proto.Client{HTTP: s.hc}}
	tags, err := proto.Failover(ctx, s.origins.Pick(ns, 0), proto.Policy{}, func(ctx context.Context, origin string) ([]string, error) {
		return oc.Tags(ctx, origin, ns)
	})
	if err == nil {
		return tags, nil
	}
	if he, final := (proto.Policy{}).Final(err); final {
		return nil, he
	}
	return nil, httpx.Wrap(err, http.StatusBadGateway, httpx.CodeUnavailable,
		fmt.Sprintf("no origin could list the tags of %s", ns))
}
