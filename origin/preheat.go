package origin

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/upstream"
	"github.com/shoal-dev/shoal/proto"
)

// upstreamAuth puts a caller's upstream Authorization (proto.HeaderUpstreamAuth,
// sent by the build-index for a preheat job that Harbor gave credentials)
// into the request's context: upstream requests made for it use that value
// instead of the configured credentials.
func upstreamAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := r.Header.Get(proto.HeaderUpstreamAuth); v != "" {
			r = r.WithContext(upstream.WithAuthorization(r.Context(), v))
		}
		next.ServeHTTP(w, r)
	})
}

// preheatAnswer is the body of a successful preheat.
type preheatAnswer struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// handlePreheat fetches a blob from upstream unless it is held, and answers
// once it is stored and verified (the build-index's preheat jobs). With
// ?pin_until=<unix seconds> the blob stays out of disk GC until then.
func (o *Origin) handlePreheat(w http.ResponseWriter, r *http.Request) {
	ns, d, err := params(r)
	if err != nil {
		writeErr(w, r, err)
		return
	}
	var pin time.Time
	if v := r.URL.Query().Get(proto.QueryPinUntil); v != "" {
		sec, err := strconv.ParseInt(v, 10, 64)
		if err != nil || sec < 0 {
			writeErr(w, r, httpx.Errorf(http.StatusBadRequest, httpx.CodeUnsupported, "%s=%q: want unix seconds", proto.QueryPinUntil, v))
			return
		}
		pin = time.Unix(sec, 0)
	}
	if !pin.IsZero() {
		if err := o.store.PinUntil(d, pin); err != nil {
			writeErr(w, r, httpx.DiskError(err))
			return
		}
	}
	if size, err := o.store.Stat(d); err == nil {
		writeJSON(w, preheatAnswer{Digest: d.String(), Size: size})
		return
	}
	f := o.startFetchAuth(ns, d, r.Header.Get(proto.HeaderUpstreamAuth))
	if err := waitFor(r.Context(), f.Done()); err != nil {
		return // the caller left; the fetch goes on
	}
	if err := f.Err(); err != nil {
		writeErr(w, r, err)
		return
	}
	if err := o.store.WaitStored(r.Context(), d); err != nil {
		writeErr(w, r, err)
		return
	}
	size, err := o.store.Stat(d)
	if err != nil {
		writeErr(w, r, err)
		return
	}
	o.log.Info("preheated blob", "digest", d, "namespace", ns, "bytes", size)
	writeJSON(w, preheatAnswer{Digest: d.String(), Size: size})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", proto.ContentTypeJSON)
	_ = json.NewEncoder(w).Encode(v)
}
