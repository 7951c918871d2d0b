package p2p

import (
	"bytes"
	"fmt"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/opencontainers/go-digest"
)

// Standard torrents let any BitTorrent client (aria2c, Transmission, a plain
// anacrolix/torrent client) download a blob that Shoal holds. A live torrent
// (pieces.go) is for Shoal nodes only: its info names pieces instead of
// hashing them, so an ordinary client would reject every piece. So every
// node that holds a blob complete and verified also seeds its standard
// torrent: a single-file info dictionary with the real SHA-1 of each piece,
// in the live torrent's piece length, named by the digest's hex and marked
// private (BEP 27: peers come from the tracker only, and the blob's info-hash
// is never published on the public DHT). The info depends on nothing but the
// blob and the piece length, so every holder (origin or agent) derives the
// same info-hash and announces it to the tracker, which hands out the
// .torrent with its own announce URL added.

// BuildStandard returns the standard torrent of blob d, of length bytes, from
// its complete piece hashes. The bencoded metainfo (Raw) carries no
// announce: the tracker adds its own.
func BuildStandard(d digest.Digest, length int64, hashes *PieceHashes) (*MetaInfo, error) {
	if !hashes.Complete() {
		known, _, _ := hashes.State()
		return nil, fmt.Errorf("standard torrent %s: %d of %d piece hashes known", d, known, hashes.NumPieces())
	}
	ib, err := standardInfo(d, length, hashes.PieceLength(), hashes.Sums())
	if err != nil {
		return nil, err
	}
	raw, err := bencode.Marshal(metainfo.MetaInfo{InfoBytes: ib, CreatedBy: "shoal"})
	if err != nil {
		return nil, fmt.Errorf("standard torrent %s: %w", d, err)
	}
	return ParseStandard(raw, d)
}

// standardInfo is the bencoded info dictionary of blob d's standard torrent.
func standardInfo(d digest.Digest, length, pieceLen int64, sums []byte) ([]byte, error) {
	private := true
	info := metainfo.Info{
		Name:        d.Encoded(),
		Length:      length,
		PieceLength: pieceLen,
		Pieces:      sums,
		Private:     &private,
	}
	if err := checkShape(&info, d); err != nil {
		return nil, fmt.Errorf("standard torrent: %w", err)
	}
	ib, err := bencode.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("standard torrent %s: %w", d, err)
	}
	return ib, nil
}

// ParseStandard decodes a standard torrent of blob d (from the tracker or an
// origin, or kept beside the blob) and checks it: its info must be exactly
// the one BuildStandard makes for some piece hashes, so that its info-hash
// is the one every holder announces. The piece hashes themselves can only
// be checked against the blob: ordinary clients check each piece, and Shoal
// seeds only blobs verified against their digest.
func ParseStandard(b []byte, d digest.Digest) (*MetaInfo, error) {
	m, err := decodeMetaInfo(b, d, "standard torrent")
	if err != nil {
		return nil, err
	}
	info := &m.Info
	if err := checkShape(info, d); err != nil {
		return nil, fmt.Errorf("standard torrent: %w", err)
	}
	if string(info.Pieces) == string(pieceNames(d, info.NumPieces())) {
		return nil, fmt.Errorf("standard torrent %s: holds piece names, not piece hashes (a live metainfo)", d)
	}
	want, err := standardInfo(d, info.Length, info.PieceLength, info.Pieces)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(want, m.InfoBytes) {
		return nil, fmt.Errorf("standard torrent %s: info dictionary is not Shoal's (other keys, not private, or not canonical)", d)
	}
	m.Standard = true
	return m, nil
}

// WithAnnounce returns m's metainfo with announce set to url: the .torrent a
// tracker hands to BitTorrent clients. The info dictionary is copied as it
// is, so the info-hash stays the same.
func (m *MetaInfo) WithAnnounce(url string) ([]byte, error) {
	out, err := bencode.Marshal(metainfo.MetaInfo{InfoBytes: m.InfoBytes, Announce: url, CreatedBy: "shoal"})
	if err != nil {
		return nil, fmt.Errorf("torrent %s: %w", m.Digest, err)
	}
	return out, nil
}
