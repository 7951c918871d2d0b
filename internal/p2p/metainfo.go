package p2p

import (
	"crypto/sha1"
	"errors"
	"fmt"
	"math/bits"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/opencontainers/go-digest"
)

// Piece lengths a metainfo may use. Small pieces cost per-piece overhead;
// huge ones slow the first exchange between peers.
const (
	MinPieceLength = 16 << 10
	MaxPieceLength = 64 << 20
)

// PieceLengthFor is the piece length an origin uses for a blob of size bytes
// unless configured otherwise: the largest power of two that still gives the
// blob 512 pieces, from 32 KiB to 4 MiB. A swarm trades nothing until peers
// hold whole pieces, and at the end waits for the last ones to spread; a
// piece crosses each hop at the uploader's rate split over its connections,
// so both cost a few hops of piece * conns / R, and pieces must be small
// next to the blob (a 16-agent swarm on 256 MiB took 1.5x its bound with
// 4 MiB pieces, 1.15x with 1 MiB, 1.10x with 512 KiB; 128 agents on 16 MiB
// at 0.5 MB/s 1.47x with 256 KiB, 1.20x with 64 KiB, 1.12-1.15x with
// 32 KiB; 16 KiB made that bench CPU-bound, as 256 KiB did the 256 MiB one).
func PieceLengthFor(size int64) int64 {
	const lo, hi = 32 << 10, 4 << 20
	pl := int64(lo)
	for pl < hi && 2*pl*512 <= size {
		pl *= 2
	}
	return pl
}

// BuildMetaInfo returns the bencoded metainfo (a .torrent) of blob d: one
// file named by the digest's hex, with piece names in place of piece hashes
// (see pieces.go), so the info-hash depends on the digest, size and piece
// length only and is known before any byte of the blob.
func BuildMetaInfo(d digest.Digest, size, pieceLen int64) ([]byte, error) {
	if size <= 0 || pieceLen <= 0 {
		return nil, fmt.Errorf("metainfo %s: %d bytes in %d-byte pieces", d, size, pieceLen)
	}
	info := metainfo.Info{
		Name:        d.Encoded(),
		Length:      size,
		PieceLength: pieceLen,
		Pieces:      pieceNames(d, int((size+pieceLen-1)/pieceLen)),
	}
	if err := checkInfo(&info, d); err != nil {
		return nil, err
	}
	ib, err := bencode.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("metainfo %s: %w", d, err)
	}
	mi := metainfo.MetaInfo{InfoBytes: ib, CreatedBy: "shoal"}
	out, err := bencode.Marshal(mi)
	if err != nil {
		return nil, fmt.Errorf("metainfo %s: %w", d, err)
	}
	return out, nil
}

// MetaInfo is a parsed, checked metainfo for one blob.
type MetaInfo struct {
	Digest    digest.Digest
	raw       []byte
	InfoBytes []byte
	Info      metainfo.Info
	InfoHash  metainfo.Hash
	// Standard: a standard torrent with real piece hashes (standard.go),
	// not the live torrent with piece names.
	Standard bool
}

// ParseMetaInfo decodes b and checks that it describes blob d sanely: name,
// single file, piece length, and the piece names of d.
func ParseMetaInfo(b []byte, d digest.Digest) (*MetaInfo, error) {
	m, err := decodeMetaInfo(b, d, "metainfo")
	if err != nil {
		return nil, err
	}
	if err := checkInfo(&m.Info, d); err != nil {
		return nil, err
	}
	return m, nil
}

// decodeMetaInfo decodes a torrent of blob d and its info dictionary, with
// no check of what they say; kind ("metainfo", "standard torrent") starts
// its errors.
func decodeMetaInfo(b []byte, d digest.Digest, kind string) (*MetaInfo, error) {
	var mi metainfo.MetaInfo
	if err := bencode.Unmarshal(b, &mi); err != nil {
		return nil, fmt.Errorf("%s %s: %w", kind, d, err)
	}
	if len(mi.InfoBytes) == 0 {
		return nil, fmt.Errorf("%s %s: no info dictionary", kind, d)
	}
	var info metainfo.Info
	if err := bencode.Unmarshal(mi.InfoBytes, &info); err != nil {
		return nil, fmt.Errorf("%s %s: info: %w", kind, d, err)
	}
	return &MetaInfo{Digest: d, raw: b, InfoBytes: mi.InfoBytes, Info: info, InfoHash: metainfo.HashBytes(mi.InfoBytes)}, nil
}

// Raw is the bencoded metainfo as received.
func (m *MetaInfo) Raw() []byte { return m.raw }

func checkInfo(info *metainfo.Info, d digest.Digest) error {
	if err := checkShape(info, d); err != nil {
		return err
	}
	if string(info.Pieces) != string(pieceNames(d, info.NumPieces())) {
		// E.g. a metainfo with real piece hashes (a standard torrent, or
		// one from before torrents were live): its info-hash names
		// another swarm.
		return fmt.Errorf("metainfo %s: pieces are not Shoal's piece names for this blob", d)
	}
	return nil
}

// checkShape checks what the live and the standard torrent of blob d share:
// one file named by the digest's hex, a sane piece length, one 20-byte
// hash (or name) per piece.
func checkShape(info *metainfo.Info, d digest.Digest) error {
	switch {
	case info.Name != d.Encoded():
		return fmt.Errorf("metainfo %s: names %q, not this blob", d, info.Name)
	case len(info.Files) != 0:
		return fmt.Errorf("metainfo %s: has %d files, want a single blob", d, len(info.Files))
	case info.Length < 0:
		return fmt.Errorf("metainfo %s: negative length", d)
	case info.PieceLength < MinPieceLength || info.PieceLength > MaxPieceLength || bits.OnesCount64(uint64(info.PieceLength)) != 1:
		return fmt.Errorf("metainfo %s: piece length %d is not a power of two in [%d, %d]", d, info.PieceLength, MinPieceLength, MaxPieceLength)
	}
	want := (info.Length + info.PieceLength - 1) / info.PieceLength
	if int64(len(info.Pieces)) != want*sha1.Size {
		return fmt.Errorf("metainfo %s: %d bytes of piece hashes, want %d for %d pieces", d, len(info.Pieces), want*sha1.Size, want)
	}
	if info.Length == 0 {
		return errors.New("metainfo: empty blobs are not shared over P2P")
	}
	return nil
}
