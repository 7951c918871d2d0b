package origin

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/internal/store"
)

// The origin seeds every blob it holds or fetches with its super-seeder;
// o.seeds (an LRU) remembers what it seeds, by digest. A blob is seeded
// from its store download while it arrives from upstream (each piece once
// hashed), from the store once it is there, and its standard torrent too
// once complete (standard.go). The store's GC ends a seed (evicted).

// seeded is a blob the origin seeds: its metainfo and its piece hashes
// (SHA-1s, and the sha256 chain the engine's agents check), which grow
// while the blob arrives from upstream, and once the blob is complete and
// verified its standard torrent (standard.go).
type seeded struct {
	mi     *p2p.MetaInfo
	hashes *p2p.PieceHashes
	std    atomic.Pointer[p2p.MetaInfo]

	chainMu sync.Mutex
	chain   *p2p.PieceHashes // nil for a stored blob until asked for (chainOf)
}

func newSeeded(d digest.Digest, size, pieceLen int64, hashes *p2p.PieceHashes) (*seeded, error) {
	raw, err := p2p.BuildMetaInfo(d, size, pieceLen)
	if err != nil {
		return nil, err
	}
	mi, err := p2p.ParseMetaInfo(raw, d)
	if err != nil {
		return nil, err
	}
	sd := &seeded{mi: mi, hashes: hashes}
	if hashes == nil {
		// A blob about to arrive: both lists grow with it.
		sd.hashes = p2p.NewPieceHashes(size, pieceLen)
		if sd.chain, err = p2p.NewChainHashes(size, pieceLen); err != nil {
			return nil, err
		}
	}
	return sd, nil
}

// chainOf returns sd's sha256 chain, hashing the stored blob d for it the
// first time it is asked for if none was kept beside it (a blob stored by
// a version that kept only SHA-1s, or a rotted list), and keeping it.
func (o *Origin) chainOf(d digest.Digest, sd *seeded) (*p2p.PieceHashes, error) {
	sd.chainMu.Lock()
	defer sd.chainMu.Unlock()
	if sd.chain != nil {
		return sd.chain, nil
	}
	f, err := o.store.Open(d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	lists, err := p2p.HashListsOf(f, sd.mi.Info.Length, sd.mi.Info.PieceLength, p2p.HashChain)
	if err != nil {
		return nil, fmt.Errorf("piece hashes of %s: %w", d, err)
	}
	sd.chain = lists[0]
	if err := o.keepList(d, metaChain, sd.chain); err != nil {
		o.log.Warn("keep sha256 chain beside blob", "digest", d, "err", err)
	}
	return sd.chain, nil
}

// Seeding reports whether the origin seeds blob d.
func (o *Origin) Seeding(d digest.Digest) bool {
	sd, ok := o.seeds.Get(d)
	return ok && o.seed.Seeding(sd.mi.InfoHash)
}

// seeded returns the metainfo and piece hashes of d and makes sure it is
// seeded: from the store, or from the upstream fetch (started if needed) as
// soon as upstream has answered, long before the blob is in.
func (o *Origin) seeded(ctx context.Context, ns string, d digest.Digest) (*seeded, error) {
	if sd, ok := o.seeds.Get(d); ok && o.seed.Seeding(sd.mi.InfoHash) {
		return sd, nil
	}
	if _, err := o.store.Stat(d); err == nil {
		// The stored copy may fail verification and be removed (or vanish
		// between the looks): then fetch it again rather than answer 404.
		if sd, err := o.seedStored(d); !errors.Is(err, store.ErrNotFound) {
			return sd, err
		}
	}
	f := o.startFetch(ns, d)
	if err := waitFor(ctx, f.Ready()); err != nil {
		return nil, err
	}
	if sd := f.Value(); sd != nil {
		return sd, nil
	}
	if err := waitFor(ctx, f.Done()); err != nil {
		return nil, err
	}
	if err := f.Err(); err != nil {
		return nil, err
	}
	return o.seedStored(d) // an empty blob, or one committed meanwhile
}

// seedStored seeds the stored blob d (verified first if it is from an
// earlier run) and returns its metainfo and piece hashes, read from beside
// the blob or computed again (metadata.go).
func (o *Origin) seedStored(d digest.Digest) (*seeded, error) {
	if sd, ok := o.seeds.Get(d); ok && o.seed.Seeding(sd.mi.InfoHash) {
		return sd, nil
	}
	file, err := o.store.Open(d)
	if err != nil {
		return nil, err
	}
	sd, err := o.loadSeeded(d, file)
	if err != nil {
		file.Close()
		return nil, err
	}
	if err := o.seed.Seed(sd.mi, file, nil, func() { file.Close() }); err != nil {
		file.Close()
		if !errors.Is(err, p2p.ErrInSwarm) {
			return nil, err
		}
	}
	o.seeds.Add(d, sd)
	if err := o.seedStandard(d, sd); err != nil {
		o.log.Warn("cannot seed the standard torrent", "digest", d, "err", err)
	}
	return sd, nil
}

// seedDownload seeds d from dl while it arrives, each piece once sd.hashes
// has it, in place of the seeds of an earlier copy (one that failed
// verification). If it fails, dl has failed and is released.
func (o *Origin) seedDownload(d digest.Digest, sd *seeded, dl *store.Download) error {
	o.seed.Drop(sd.mi.InfoHash)
	if old, ok := o.seeds.Peek(d); ok {
		if std := old.std.Load(); std != nil {
			o.seed.Drop(std.InfoHash)
		}
	}
	dl.Acquire()
	if err := o.seed.Seed(sd.mi, dl, sd.hashes, dl.Release); err != nil {
		dl.Release()
		dl.Fail(err)
		dl.Release()
		return err
	}
	o.seeds.Add(d, sd)
	return nil
}

// seedFetched goes on seeding d, now committed to the store: its metadata
// is kept beside it and its standard torrent seeded. Call it before the
// fetch ends: until then, the standard torrent is answered "not complete
// yet".
func (o *Origin) seedFetched(d digest.Digest, sd *seeded) {
	if err := o.keepSeeded(d, sd); err != nil {
		o.log.Warn("keep metainfo beside blob", "digest", d, "err", err)
	}
	if err := o.seedStandard(d, sd); err != nil {
		o.log.Warn("cannot seed the standard torrent", "digest", d, "err", err)
	}
}

// unseedFailed ends the seed of a fetch that failed: peers stop getting
// pieces and hashes (the last hash was never published, so none can
// complete the blob). Call it before the fetch ends: a new one may seed the
// same info-hash.
func (o *Origin) unseedFailed(d digest.Digest, sd *seeded, err error) {
	sd.hashes.Fail(err)
	if sd.chain != nil {
		sd.chain.Fail(err)
	}
	o.seed.Drop(sd.mi.InfoHash)
	o.seeds.Remove(d)
}

// evicted stops seeding a blob the store's GC removed, which closes its file
// (and frees its disk space).
func (o *Origin) evicted(d digest.Digest) {
	if sd, ok := o.seeds.Get(d); ok {
		o.seed.Drop(sd.mi.InfoHash)
		if std := sd.std.Load(); std != nil {
			o.seed.Drop(std.InfoHash)
		}
	}
	o.seeds.Remove(d)
}

// chainHash is a sha256 chain as the store's hash: the chain's Write, and
// its running sha256 as the Sum checked against the digest.
type chainHash struct{ *p2p.PieceHashes }

func (c chainHash) Sum(b []byte) []byte { return c.BlobSum(b) }
