package origin

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/p2p"
)

// Meta files kept beside a blob: its metainfo, and its piece hashes
// followed by their sha256 (a list that rotted on disk would make agents
// reject every piece and ban honest peers).
const (
	metaTorrent = "torrent"
	metaPieces  = "pieces"
)

// keepSeeded writes sd's metainfo and piece hashes beside blob d.
func (o *Origin) keepSeeded(d digest.Digest, sd *seeded) error {
	if err := o.store.WriteMeta(d, metaTorrent, sd.mi.Raw()); err != nil {
		return err
	}
	sums := sd.hashes.Sums()
	check := sha256.Sum256(sums)
	return o.store.WriteMeta(d, metaPieces, append(slices.Clip(sums), check[:]...))
}

// loadSeeded returns the metainfo and piece hashes of the stored blob d:
// those kept beside it if they are whole, else computed from file again
// (and kept).
func (o *Origin) loadSeeded(d digest.Digest, file *os.File) (*seeded, error) {
	fi, err := file.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if size == 0 {
		return nil, httpx.Errorf(http.StatusNotFound, httpx.CodeBlobUnknown, "empty blob %s has no metainfo; it needs no transfer", d)
	}
	if sd := o.readSeeded(d, size); sd != nil {
		return sd, nil
	}
	// None kept (a blob put there by hand), or from an older version, or
	// damaged: hash the verified blob again.
	pl := o.pieceLength(size)
	hashes, err := p2p.HashesOf(io.NewSectionReader(file, 0, size), size, pl)
	if err != nil {
		return nil, fmt.Errorf("metainfo %s: %w", d, err)
	}
	sd, err := newSeeded(d, size, pl, hashes)
	if err != nil {
		return nil, err
	}
	if err := o.keepSeeded(d, sd); err != nil {
		o.log.Warn("keep metainfo beside blob", "digest", d, "err", err)
	}
	return sd, nil
}

// readSeeded reads what keepSeeded wrote beside blob d of size bytes; nil
// if it is missing, damaged or incomplete.
func (o *Origin) readSeeded(d digest.Digest, size int64) *seeded {
	raw, err := o.store.ReadMeta(d, metaTorrent)
	if err != nil {
		return nil
	}
	mi, err := p2p.ParseMetaInfo(raw, d)
	kept, kerr := o.store.ReadMeta(d, metaPieces)
	if err != nil || kerr != nil || len(kept) < sha256.Size {
		return nil
	}
	sums, check := kept[:len(kept)-sha256.Size], kept[len(kept)-sha256.Size:]
	hashes := p2p.NewPieceHashes(size, mi.Info.PieceLength)
	if sha256.Sum256(sums) != [sha256.Size]byte(check) || hashes.Add(sums) != nil || !hashes.Complete() {
		return nil
	}
	return &seeded{mi: mi, hashes: hashes}
}

// pieceLength is the configured piece length, or one chosen by blob size.
func (o *Origin) pieceLength(size int64) int64 {
	if o.cfg.PieceLength != 0 {
		return int64(o.cfg.PieceLength)
	}
	return p2p.PieceLengthFor(size)
}
