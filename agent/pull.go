package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/inflight"
	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/internal/store"
)

// pull is one download of a blob, shared by every client asking for it
// (a.pulls). When its last client leaves it goes on for pull_grace, so that
// a client reading the blob in chunks on connections of their own
// (containerd 2.x) finds it still running; then it stops. A client that
// comes while a stopped pull winds down waits for it to end and starts a
// new one: two downloads of one blob never overlap.
//
// Its ready value tells the clients that the store download exists (nil:
// follow it; also when the blob was stored meanwhile) or why there is
// none. runPull readies it with download's result when it returns;
// download readies it earlier, as soon as its store download exists, so
// that clients stream the blob as it arrives.
type pull = inflight.Job[error]

// joinPull returns the running pull of d or starts one; the caller must
// a.pulls.Leave it when it stops reading.
func (a *Agent) joinPull(ctx context.Context, ns string, d digest.Digest) (*pull, bool, error) {
	return a.pulls.Join(ctx, d, func(ctx context.Context, p *pull) error {
		return a.runPull(ctx, ns, d, p)
	})
}

func (a *Agent) runPull(ctx context.Context, ns string, d digest.Digest, p *pull) error {
	start := time.Now()
	var err error
	// At most max_downloads blobs at once; the others wait their turn (their
	// clients wait too, and may give up, which cancels ctx).
	select {
	case a.slots <- struct{}{}:
		a.active.Inc()
		err = a.download(ctx, ns, d, func() { p.SetReady(nil) })
		a.active.Dec()
		<-a.slots
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		// A client that comes from now on (a retry) starts a new pull
		// rather than joining this one and getting its error.
		a.pulls.Stop(p)
	}
	p.SetReady(err) // a no-op if the download existed
	switch {
	case err == nil:
		a.pullsRes.WithLabelValues("ok").Inc()
		a.log.Info("pulled blob", "digest", d, "namespace", ns, "duration", time.Since(start),
			"from_origins", a.node.BytesFromOrigins(), "from_peers", a.node.BytesFromPeers())
	case ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		// Every client left. (A pull that failed on its own is counted and
		// logged as a failure even though its clients have gone by now.)
		a.pullsRes.WithLabelValues("cancelled").Inc()
	default:
		a.pullsRes.WithLabelValues("error").Inc()
		a.log.Warn("pull failed", "digest", d, "namespace", ns, "err", err)
	}
	return err
}

// download gets the metainfo, joins the swarm and waits until the blob is
// committed (and then keeps seeding it) or fails; ready is called once the
// store download exists.
func (a *Agent) download(ctx context.Context, ns string, d digest.Digest, ready func()) error {
	if _, err := a.store.Stat(d); err == nil {
		return nil // committed by the pull before this one, after our client looked
	}
	mctx, cancel := context.WithTimeout(ctx, a.cfg.MetainfoTimeout)
	mi, err := a.meta.get(mctx, ns, d)
	cancel()
	if err != nil {
		var he *httpx.Error
		answered := errors.As(err, &he)
		switch {
		case a.cfg.DisableFallback || ctx.Err() != nil:
			return err
		case answered && (he.Status < 500 || a.up == nil):
			return err // a tracker answered: the blob is unknown, or its origins failed and there is no upstream fallback
		case answered:
			a.log.Warn("the tracker's origins failed; trying the origins, then the upstream registry", "digest", d, "err", err)
		default:
			a.fallbacks.WithLabelValues("tracker_unreachable").Inc()
			a.log.Warn("no tracker answered; fetching the blob from an origin over HTTP", "digest", d, "err", err)
		}
		return a.fetchRest(ctx, ns, d, nil, ready)
	}
	dl, err := a.createDownload(ctx, d, mi.Info.Length)
	if err != nil {
		return err
	}
	if dl == nil {
		return nil // another download committed it meanwhile
	}
	dl.Acquire() // ours, beyond the swarm's: the download may outlive the swarm
	defer dl.Release()
	// The piece hashes come from the origin while it still fetches the blob.
	hashes, err := a.newHashes(mi)
	if err != nil {
		dl.Fail(err)
		dl.Release()
		return err
	}
	hctx, hcancel := context.WithCancel(ctx)
	defer hcancel()
	go a.fetchPieces(hctx, ns, d, hashes)
	sw, err := a.swarms.Download(mi, dl, hashes)
	if err != nil {
		dl.Fail(err)
		dl.Release()
		return err
	}
	ready()

	err = a.watch(ctx, sw, dl, hashes)
	if errors.Is(err, errStalled) && !a.cfg.DisableFallback {
		// Stop asking peers, then take the rest from an origin.
		sw.Close()
		a.fallbacks.WithLabelValues("swarm_stalled").Inc()
		a.log.Warn("swarm stalled; fetching the rest from an origin over HTTP", "digest", d,
			"verified_bytes", dl.Hashed(), "err", err)
		if err = a.fetchRest(ctx, ns, d, dl, ready); err == nil {
			a.keepMeta(d, mi)
			a.ensureSeeding(d)
			return nil
		}
	}
	if err != nil {
		dl.Fail(err)
		sw.Close()
		return err
	}
	a.keepMeta(d, mi)
	a.seedPulled(ns, d, mi, hashes)
	return nil
}

func (a *Agent) keepMeta(d digest.Digest, mi *p2p.MetaInfo) {
	if err := a.store.WriteMeta(d, metaTorrent, mi.Raw()); err != nil {
		a.log.Warn("keep metainfo beside blob", "digest", d, "err", err)
	}
}

// createDownload starts the store download of d. A download left by a
// cancelled pull may still be closing: wait for it first.
func (a *Agent) createDownload(ctx context.Context, d digest.Digest, size int64) (*store.Download, error) {
	for range 3 {
		dl, err := a.store.Create(d, size)
		if !errors.Is(err, store.ErrInProgress) {
			return dl, httpx.DiskError(err)
		}
		if old := a.store.Active(d); old != nil {
			_ = old.Wait(ctx)
			old.Release()
		}
		if _, err := a.store.Stat(d); err == nil {
			return nil, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return nil, fmt.Errorf("download %s: %w", d, store.ErrInProgress)
}

// errStalled: no piece arrived for StallTimeout.
var errStalled = errors.New("swarm made no progress")

// watch waits for the download to commit, failing it when the swarm stalls
// or its piece hashes cannot be had (no piece could be checked).
func (a *Agent) watch(ctx context.Context, sw swarmDownload, dl *store.Download, hashes *p2p.PieceHashes) error {
	tick := time.NewTicker(stallCheckEvery)
	defer tick.Stop()
	last, lastChange := int64(-1), time.Now()
	for {
		_, herr, hchanged := hashes.State()
		if herr != nil {
			return fmt.Errorf("%w: %w", errStalled, herr)
		}
		select {
		case <-dl.Done():
			return dl.Err()
		case <-ctx.Done():
			if dl.Verified() {
				// Every client may have had the blob already (the last byte
				// goes out before the sync): let the commit finish.
				<-dl.Done()
				return dl.Err()
			}
			return ctx.Err()
		case <-hchanged:
		case now := <-tick.C:
			if n := sw.BytesCompleted(); n != last {
				last, lastChange = n, now
			} else if now.Sub(lastChange) > a.cfg.StallTimeout {
				return fmt.Errorf("%w for %s (%d of %d bytes)", errStalled, a.cfg.StallTimeout, n, dl.Size())
			}
		}
	}
}

// ensureSeeding rejoins the live and the standard swarm of a cached blob
// (e.g. after a restart, or once they were left for max_swarms) using the
// metainfo kept beside it. A blob without one (it came over HTTP when no
// tracker answered) is not seeded: only the live metainfo tells the piece
// length every other holder uses.
func (a *Agent) ensureSeeding(d digest.Digest) {
	if live, std := a.node.Touch(d.String()); live && std {
		return
	}
	// One at a time per blob: hashing a blob for its standard torrent may
	// take a while, and every cache hit meanwhile asks again.
	_, _, _ = a.seeding.Do(d.String(), func() (any, error) {
		live, std := a.node.Touch(d.String())
		raw, err := a.store.ReadMeta(d, metaTorrent)
		if err != nil {
			return nil, nil
		}
		mi, err := p2p.ParseMetaInfo(raw, d)
		if err != nil {
			return nil, nil
		}
		if !live {
			f, err := a.store.Open(d)
			if err != nil {
				return nil, nil
			}
			if _, err := a.node.Seed(mi, f, func() { f.Close() }); err != nil {
				f.Close()
			}
		}
		if !std {
			if err := a.seedStandard(d, mi, nil); err != nil {
				a.log.Warn("cannot seed the standard torrent", "digest", d, "err", err)
			}
		}
		return nil, nil
	})
}

// newHashes is the list of piece hashes a swarm of mi checks against: the
// blob's sha256 chain for the engine (one hash a byte checks the pieces
// and the blob), SHA-1s for the library, which checks nothing else.
func (a *Agent) newHashes(mi *p2p.MetaInfo) (*p2p.PieceHashes, error) {
	if a.cfg.P2P.Engine == p2p.EngineLibrary {
		return p2p.NewPieceHashes(mi.Info.Length, mi.Info.PieceLength), nil
	}
	return p2p.NewChainHashes(mi.Info.Length, mi.Info.PieceLength)
}
