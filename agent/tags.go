package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/proto"
)

// handleTags serves GET /v2/<name>/tags/list with the spec's n and last
// pagination (tags in lexical order, a Link header when more remain).
func (a *Agent) handleTags(w http.ResponseWriter, r *http.Request, name, ns string) {
	q := r.URL.Query()
	n := -1
	if s := q.Get("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			httpx.WriteError(w, r, httpx.Errorf(http.StatusBadRequest, httpx.CodeUnsupported, "n=%q: want a non-negative integer", s))
			return
		}
		n = v
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.MetainfoTimeout)
	defer cancel()
	tags, err := a.cluster.listTags(ctx, ns)
	if err != nil {
		httpx.WriteError(w, r, manifestErr(err, ns+" tags"))
		return
	}
	tags = slices.Clone(tags)
	slices.Sort(tags)
	tags = slices.Compact(tags)
	if last := q.Get("last"); last != "" {
		i, _ := slices.BinarySearch(tags, last)
		for i < len(tags) && tags[i] <= last {
			i++
		}
		tags = tags[i:]
	}
	if n >= 0 && n < len(tags) {
		tags = tags[:n]
		if n > 0 {
			next := url.Values{"n": {strconv.Itoa(n)}, "last": {tags[n-1]}}
			if ns := q.Get(proto.QueryNamespace); ns != "" {
				next.Set(proto.QueryNamespace, ns)
			}
			w.Header().Set("Link", `<`+proto.V2TagsPath(name, next)+`>; rel="next"`)
		}
	}
	if tags == nil {
		tags = []string{}
	}
	w.Header().Set("Content-Type", proto.ContentTypeJSON)
	_ = json.NewEncoder(w).Encode(proto.TagList{Name: name, Tags: tags})
}
