package agent

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/p2p"
)

// An agent seeds the standard torrent (p2p/standard.go) of every blob it
// holds complete, beside the live one, so that any BitTorrent client can
// download the blob from it through the tracker. Its info needs the real
// piece hashes in the live torrent's piece length: those the pull checked
// every piece against, or, for a blob that came (partly) over HTTP or
// before a restart, the hashes of the stored blob, which the store
// verified against its digest. Either way they describe verified bytes
// only. The torrent is kept beside the blob (metaStandard), so a restart
// does not hash the blob again.

// Meta files kept beside a blob: its live metainfo, and its standard
// torrent.
const (
	metaTorrent  = "torrent"
	metaStandard = "standard"
)

// seedStandard joins the standard swarm of the committed blob d, whose live
// metainfo is mi; hashes, if complete, are the piece hashes the pull
// verified (nil: read the kept torrent, or hash the stored blob).
func (a *Agent) seedStandard(d digest.Digest, mi *p2p.MetaInfo, hashes *p2p.PieceHashes) error {
	std, err := a.standardOf(d, mi, hashes)
	if err != nil {
		return err
	}
	f, err := a.store.Open(d)
	if err != nil {
		return err
	}
	if _, err := a.node.Seed(std, f, func() { f.Close() }); err != nil {
		f.Close()
		if !errors.Is(err, p2p.ErrInSwarm) {
			return err
		}
	}
	return nil
}

// seedPulled seeds the standard torrent of d, just pulled, every piece
// checked against hashes (complete). A standard torrent holds SHA-1s, which
// a sha256 chain has not: the origins' list (of the blob they verified)
// spares hashing the blob again; without it, seedStandard hashes the
// stored blob. The list is asked for on the agent's context, not the
// pull's, which ends with its clients while this runs, for pull_grace at
// most (as long as the pull went on for its clients once they left: it
// holds a download slot meanwhile); an agent that is stopping builds
// nothing (it could not seed it), and after a restart the blob's next
// cache hit seeds it.
func (a *Agent) seedPulled(ns string, d digest.Digest, mi *p2p.MetaInfo, hashes *p2p.PieceHashes) {
	std := hashes
	if hashes.Kind() != p2p.HashSHA1 {
		ctx, cancel := context.WithTimeout(a.ctx, a.cfg.PullGrace)
		std = p2p.NewPieceHashes(mi.Info.Length, mi.Info.PieceLength)
		a.fetchPieces(ctx, ns, d, std)
		cancel()
	}
	if a.ctx.Err() != nil {
		return
	}
	if err := a.seedStandard(d, mi, std); err != nil {
		a.log.Warn("cannot seed the standard torrent", "digest", d, "err", err)
	}
}

// standardOf returns the standard torrent of d: kept beside the blob, built
// from hashes, or built from the stored blob's own hashes (and kept).
func (a *Agent) standardOf(d digest.Digest, mi *p2p.MetaInfo, hashes *p2p.PieceHashes) (*p2p.MetaInfo, error) {
	if raw, err := a.store.ReadMeta(d, metaStandard); err == nil {
		// A kept torrent damaged on disk fails to parse, or has another
		// info-hash that no client asks for: it can never pass wrong
		// hashes off as this blob's.
		std, err := p2p.ParseStandard(raw, d)
		if err == nil && std.Info.Length == mi.Info.Length && std.Info.PieceLength == mi.Info.PieceLength {
			return std, nil
		}
	}
	if hashes == nil || !hashes.Complete() || hashes.Kind() != p2p.HashSHA1 {
		a.log.Info("hashing the stored blob for its standard torrent", "digest", d)
		f, err := a.store.Open(d)
		if err != nil {
			return nil, err
		}
		hashes, err = p2p.HashesOf(io.NewSectionReader(f, 0, mi.Info.Length), mi.Info.Length, mi.Info.PieceLength)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("standard torrent %s: %w", d, err)
		}
	}
	std, err := p2p.BuildStandard(d, mi.Info.Length, hashes)
	if err != nil {
		return nil, err
	}
	if err := a.store.WriteMeta(d, metaStandard, std.Raw()); err != nil {
		a.log.Warn("keep the standard torrent beside the blob", "digest", d, "err", err)
	}
	return std, nil
}
