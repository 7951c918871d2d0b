package origin

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/internal/store"
	"github.com/shoal-dev/shoal/proto"
)

// params reads {ns} (path-escaped: "library%2Fubuntu") and {digest}.
func params(r *http.Request) (string, digest.Digest, error) {
	ns, err := url.PathUnescape(chi.URLParam(r, "ns"))
	if err != nil || ns == "" {
		return "", "", httpx.Errorf(http.StatusBadRequest, httpx.CodeNameInvalid, "namespace %q is not a path-escaped repository", chi.URLParam(r, "ns"))
	}
	d, err := digest.Parse(chi.URLParam(r, "digest"))
	if err == nil && d.Algorithm() != digest.SHA256 {
		err = digest.ErrDigestUnsupported
	}
	if err != nil {
		return "", "", httpx.Errorf(http.StatusBadRequest, httpx.CodeDigestInvalid, "digest %q: %v", chi.URLParam(r, "digest"), err)
	}
	return ns, d, nil
}

// handleMetainfo answers the bencoded metainfo of a blob, starting its
// upstream fetch if needed: the answer needs only the blob's size, so it
// comes as soon as upstream has answered.
func (o *Origin) handleMetainfo(w http.ResponseWriter, r *http.Request) {
	ns, d, err := params(r)
	if err != nil {
		writeErr(w, r, err)
		return
	}
	sd, err := o.seeded(r.Context(), ns, d)
	if err != nil {
		writeErr(w, r, err)
		return
	}
	raw := sd.mi.Raw()
	w.Header().Set("Content-Type", proto.ContentTypeTorrent)
	w.Header().Set("Content-Length", strconv.Itoa(len(raw)))
	w.Header().Set(proto.HeaderInfoHash, sd.mi.InfoHash.HexString())
	_, _ = w.Write(raw)
}

// A piece-hash stream is paced while the blob arrives: a write at most
// every hashStreamEvery, and one that would carry fewer than
// hashStreamBatch new hashes waits until they are there or the oldest has
// waited hashStreamMaxWait; the first write and the last hash go at once.
// Unpaced, every agent's stream took a write and a flush each time the
// upstream copy completed a piece (N = 64 cold at 1 MB/s: 7 % of the
// swarm's CPU with the agents' reads), and at slow links, where pieces
// arrive a few a second, the 100 ms alone still wrote once a piece (N = 256
// at 0.125 MB/s, cold: a sixth of the swarm's system calls). A late hash
// only delays the first Have of a fresh piece, and rarely that: at the
// origin's cap a fresh piece leaves several pieces behind its arrival, so
// its hash is out before any agent holds it. Variables for tests.
var (
	hashStreamEvery   = 100 * time.Millisecond
	hashStreamBatch   = 4
	hashStreamMaxWait = time.Second
)

// streamWait is how long a piece-hash stream that has sent hashes [from,
// sent) of n, and knows the first known, waits before its next write (0:
// write now): last is when it last wrote, pending since when a hash it has
// not sent waits.
func streamWait(now, last, pending time.Time, from, sent, known, n int) time.Duration {
	if known == n {
		return 0
	}
	wait := hashStreamEvery - now.Sub(last)
	if sent > from && known-sent < hashStreamBatch {
		wait = max(wait, hashStreamMaxWait-now.Sub(pending))
	}
	return max(wait, 0)
}

// handlePieces streams a blob's piece hashes, 20 bytes (SHA-1) per piece in
// order, or 32 (the sha256 chain, p2p.HashChain) with ?hash=sha256-chain,
// from piece ?from= on: as the origin hashes them while the blob
// arrives from upstream (in batches, see streamWait), all at once for a
// stored blob. The
// answer starts with the first hash; its length is known up front
// (Content-Length), so a stream cut short by a failed fetch is seen as such,
// and a fetch that fails before any hash gets an OCI error.
func (o *Origin) handlePieces(w http.ResponseWriter, r *http.Request) {
	ns, d, err := params(r)
	if err != nil {
		writeErr(w, r, err)
		return
	}
	from := 0
	if v := r.URL.Query().Get("from"); v != "" {
		if from, err = strconv.Atoi(v); err != nil || from < 0 {
			writeErr(w, r, httpx.Errorf(http.StatusBadRequest, httpx.CodeUnsupported, "from=%q: want a piece index", v))
			return
		}
	}
	kind, err := p2p.ParseHashKind(r.URL.Query().Get(proto.QueryHash))
	if err != nil {
		writeErr(w, r, httpx.Errorf(http.StatusBadRequest, httpx.CodeUnsupported, "%s", err))
		return
	}
	sd, err := o.seeded(r.Context(), ns, d)
	if err != nil {
		writeErr(w, r, err)
		return
	}
	h := sd.hashes
	if kind == p2p.HashChain {
		if h, err = o.chainOf(d, sd); err != nil {
			writeErr(w, r, err)
			return
		}
	}
	size := kind.Size()
	n := h.NumPieces()
	if from > n {
		writeErr(w, r, httpx.Errorf(http.StatusRequestedRangeNotSatisfiable, httpx.CodeRangeInvalid, "from=%d: the blob has %d pieces", from, n))
		return
	}
	rc := http.NewResponseController(w)
	var last, pending time.Time // of the last write; since a hash waits
	for sent := from; sent < n; {
		known, herr, changed := h.State()
		if known > sent {
			now := time.Now()
			if pending.IsZero() {
				pending = now
			}
			if wait := streamWait(now, last, pending, from, sent, known, n); herr == nil && wait > 0 {
				// A full batch, the last hash (which goes at once) or the
				// list's failure ends a wait for one: woken for that, not
				// for every hash, with a swarm's agents all streaming.
				var full <-chan struct{}
				if known-sent < hashStreamBatch {
					full = h.Await(min(sent+hashStreamBatch, n))
				}
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-full:
					t.Stop()
				case <-r.Context().Done():
					t.Stop()
					return
				}
				continue
			}
			if sent == from {
				w.Header().Set("Content-Type", proto.ContentTypeOctetStream)
				w.Header().Set("Content-Length", strconv.Itoa((n-from)*size))
				w.Header().Set(proto.HeaderPieceLength, strconv.FormatInt(h.PieceLength(), 10))
				w.Header().Set(proto.HeaderPieceHash, string(kind))
			}
			if _, err := w.Write(h.Sums()[sent*size : known*size]); err != nil {
				return
			}
			_ = rc.Flush()
			sent, last, pending = known, time.Now(), time.Time{}
			continue
		}
		if herr != nil {
			if sent == from {
				writeErr(w, r, herr) // nothing sent yet: say why
				return
			}
			// Cut the response short, which the client sees against
			// Content-Length.
			panic(http.ErrAbortHandler)
		}
		select {
		case <-changed:
		case <-r.Context().Done():
			return
		}
	}
}

// handleBlob serves the blob over HTTP (the agents' fallback path), with
// Range. A blob still arriving from upstream is streamed as it arrives.
func (o *Origin) handleBlob(w http.ResponseWriter, r *http.Request) {
	ns, d, err := params(r)
	if err != nil {
		writeErr(w, r, err)
		return
	}
	blob, size, err := o.store.OpenOrFollow(r.Context(), d)
	if err != nil && r.Method == http.MethodHead {
		size, err = o.headUpstream(r.Context(), ns, d)
		if err != nil {
			writeErr(w, r, err)
			return
		}
		httpx.SetBlobHeaders(w, d)
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		return
	}
	if err != nil {
		f := o.startFetch(ns, d)
		if waitFor(r.Context(), f.Ready()) != nil {
			return
		}
		if blob, size, err = o.store.OpenOrFollow(r.Context(), d); err != nil {
			<-f.Done() // it failed or finished between the two looks
			if f.Err() != nil {
				err = f.Err()
			} else {
				blob, size, err = o.store.OpenOrFollow(r.Context(), d)
			}
		}
		if err != nil {
			writeErr(w, r, err)
			return
		}
	}
	defer blob.Close()
	n := httpx.ServeBlob(w, r, d, size, store.Content(blob))
	o.httpBytes.Add(float64(n))
	o.httpSent.Add(n)
}

func (o *Origin) headUpstream(ctx context.Context, ns string, d digest.Digest) (int64, error) {
	repo, err := o.up.Resolve(ns)
	if err != nil {
		return 0, err
	}
	size, err := o.up.HeadBlob(ctx, repo, d)
	if err != nil {
		o.logUpstreamErr("upstream HEAD failed", repo, d, err)
	}
	return size, err
}

var _ store.Blob = (*store.Reader)(nil)
