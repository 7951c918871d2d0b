package origin

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
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
// (SHA-1s, and the sha256 chain) each followed by their sha256 (a list
// that rotted on disk would make agents reject every piece and ban honest
// peers).
const (
	metaTorrent = "torrent"
	metaPieces  = "pieces"
	metaChain   = "chain"
)

// keepSeeded writes sd's metainfo and piece hashes beside blob d (the
// chain if it is complete).
func (o *Origin) keepSeeded(d digest.Digest, sd *seeded) error {
	if err := o.store.WriteMeta(d, metaTorrent, sd.mi.Raw()); err != nil {
		return err
	}
	if err := o.keepList(d, metaPieces, sd.hashes); err != nil {
		return err
	}
	sd.chainMu.Lock()
	chain := sd.chain
	sd.chainMu.Unlock()
	if chain == nil || !chain.Complete() {
		return nil
	}
	return o.keepList(d, metaChain, chain)
}

// keepList writes a complete list of piece hashes beside blob d, followed
// by its sha256.
func (o *Origin) keepList(d digest.Digest, name string, h *p2p.PieceHashes) error {
	sums := h.Sums()
	check := sha256.Sum256(sums)
	return o.store.WriteMeta(d, name, append(slices.Clip(sums), check[:]...))
}

// readList reads what keepList wrote beside blob d: a list of kind for
// size bytes in pieceLen pieces; nil if it is missing, damaged or
// incomplete (and a chain whose last entry is not the digest).
func (o *Origin) readList(d digest.Digest, name string, kind p2p.HashKind, size, pieceLen int64) *p2p.PieceHashes {
	kept, err := o.store.ReadMeta(d, name)
	if err != nil || len(kept) < sha256.Size {
		return nil
	}
	sums, check := kept[:len(kept)-sha256.Size], kept[len(kept)-sha256.Size:]
	if sha256.Sum256(sums) != [sha256.Size]byte(check) {
		return nil
	}
	var h *p2p.PieceHashes
	switch kind {
	case p2p.HashChain:
		if h, err = p2p.NewChainHashes(size, pieceLen); err != nil {
			return nil
		}
		if want, err := hex.DecodeString(d.Encoded()); err != nil || !bytes.HasSuffix(sums, want) {
			return nil
		}
	default:
		h = p2p.NewPieceHashes(size, pieceLen)
	}
	if h.Add(sums) != nil || !h.Complete() {
		return nil
	}
	return h
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
	// damaged: hash the verified blob again, both lists in one pass.
	pl := o.pieceLength(size)
	kinds := []p2p.HashKind{p2p.HashSHA1}
	if pl%sha256.BlockSize == 0 {
		kinds = append(kinds, p2p.HashChain)
	}
	lists, err := p2p.HashListsOf(io.NewSectionReader(file, 0, size), size, pl, kinds...)
	if err != nil {
		return nil, fmt.Errorf("metainfo %s: %w", d, err)
	}
	sd, err := newSeeded(d, size, pl, lists[0])
	if err != nil {
		return nil, err
	}
	if len(lists) > 1 {
		sd.chain = lists[1]
	}
	if err := o.keepSeeded(d, sd); err != nil {
		o.log.Warn("keep metainfo beside blob", "digest", d, "err", err)
	}
	return sd, nil
}

// readSeeded reads what keepSeeded wrote beside blob d of size bytes; nil
// if the metainfo or the SHA-1s are missing, damaged or incomplete. The
// chain, if so (an older version kept none), is left nil for chainOf to
// hash when asked.
func (o *Origin) readSeeded(d digest.Digest, size int64) *seeded {
	raw, err := o.store.ReadMeta(d, metaTorrent)
	if err != nil {
		return nil
	}
	mi, err := p2p.ParseMetaInfo(raw, d)
	if err != nil || mi.Info.Length != size {
		return nil
	}
	hashes := o.readList(d, metaPieces, p2p.HashSHA1, size, mi.Info.PieceLength)
	if hashes == nil {
		return nil
	}
	return &seeded{mi: mi, hashes: hashes, chain: o.readList(d, metaChain, p2p.HashChain, size, mi.Info.PieceLength)}
}

// pieceLength is the configured piece length, or one chosen by blob size.
func (o *Origin) pieceLength(size int64) int64 {
	if o.cfg.PieceLength != 0 {
		return int64(o.cfg.PieceLength)
	}
	return p2p.PieceLengthFor(size)
}
