package p2p

import (
	"context"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/proto"
)

// Shoal's torrents are live: an origin publishes a blob's metainfo as soon as
// the upstream registry has answered with its size, and seeds each piece as
// it arrives, so the swarm runs while the origin is still fetching (the
// upstream transfer and the swarm overlap instead of adding up). A BitTorrent
// v1 info dictionary must carry every piece's SHA-1, which nobody knows
// before the whole blob is in; so the info carries piece *names*, derived
// from the digest (pieceName), which bind the info-hash to the blob, and the
// real hashes travel beside it as a growing list (PieceHashes) that the
// origin serves while it hashes (GET .../pieces). Agents check every piece
// against that list (transfer.check) and the whole blob against its
// digest, as before.

// pieceName is the stand-in for piece i's hash in the info dictionary of
// blob d.
func pieceName(d digest.Digest, i int) [sha1.Size]byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	h := sha1.New()
	h.Write([]byte("shoal piece\x00"))
	h.Write([]byte(d))
	h.Write(b[:])
	var sum [sha1.Size]byte
	h.Sum(sum[:0])
	return sum
}

// pieceNames is the info dictionary's "pieces" field for blob d.
func pieceNames(d digest.Digest, n int) []byte {
	out := make([]byte, 0, n*sha1.Size)
	for i := range n {
		name := pieceName(d, i)
		out = append(out, name[:]...)
	}
	return out
}

// ErrPieceHashes: the list of piece hashes could not be completed.
var ErrPieceHashes = errors.New("piece hashes unavailable")

// PieceHashes is the SHA-1 of every piece of one blob, in order, as far as it
// is known: complete for a stored blob, growing while an origin hashes a blob
// arriving from upstream (Write) or while an agent receives the origin's list
// (Add). Readers wait for the hash they need (Wait).
type PieceHashes struct {
	pieceLen, length int64
	n                int

	// Write's state: the hash of the piece being written, bytes so far,
	// and the last piece's hash while held back (see HoldLast).
	h        hash.Hash
	pos      int64
	holdLast bool
	held     []byte

	mu      sync.Mutex
	sums    []byte
	err     error
	changed chan struct{} // closed and replaced on every change
}

// NewPieceHashes is an empty list for a blob of length bytes in pieces of
// pieceLen.
func NewPieceHashes(length, pieceLen int64) *PieceHashes {
	n := int((length + pieceLen - 1) / pieceLen)
	return &PieceHashes{pieceLen: pieceLen, length: length, n: n, h: sha1.New(),
		sums: make([]byte, 0, n*sha1.Size), changed: make(chan struct{})}
}

// HashesOf hashes a whole blob of length bytes read from r.
func HashesOf(r io.Reader, length, pieceLen int64) (*PieceHashes, error) {
	h := NewPieceHashes(length, pieceLen)
	if _, err := io.CopyBuffer(h, io.LimitReader(r, length), make([]byte, 256<<10)); err != nil {
		return nil, fmt.Errorf("hash pieces: %w", err)
	}
	if !h.Complete() {
		return nil, fmt.Errorf("hash pieces: blob shorter than %d bytes", length)
	}
	return h, nil
}

// NumPieces of the blob.
func (p *PieceHashes) NumPieces() int { return p.n }

// PieceLength the hashes are for.
func (p *PieceHashes) PieceLength() int64 { return p.pieceLen }

// Write hashes the next bytes of the blob (written in order, from the first)
// and publishes each piece's hash once the piece is complete.
func (p *PieceHashes) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		if p.pos >= p.length {
			return 0, fmt.Errorf("hash pieces: more than the blob's %d bytes", p.length)
		}
		end := min((p.pos/p.pieceLen+1)*p.pieceLen, p.length)
		k := min(int64(len(b)), end-p.pos)
		p.h.Write(b[:k])
		p.pos += k
		b = b[k:]
		if p.pos == end {
			sum := p.h.Sum(nil)
			p.h.Reset()
			if p.holdLast && end == p.length {
				p.held = sum
				continue
			}
			if err := p.Add(sum); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

// HoldLast makes Write keep the last piece's hash back until Publish: an
// origin publishes it only once the whole blob matched its digest, so that
// no peer can complete a blob that upstream sent wrong.
func (p *PieceHashes) HoldLast() { p.holdLast = true }

// Publish adds the held-back hash of the last piece.
func (p *PieceHashes) Publish() error {
	if p.held == nil {
		return fmt.Errorf("%w: the last piece was not hashed", ErrPieceHashes)
	}
	return p.Add(p.held)
}

// Add appends whole hashes (a multiple of 20 bytes) after those known.
func (p *PieceHashes) Add(sums []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.err != nil:
		return p.err
	case len(sums)%sha1.Size != 0:
		return fmt.Errorf("%w: %d bytes is not a whole number of hashes", ErrPieceHashes, len(sums))
	case len(p.sums)+len(sums) > p.n*sha1.Size:
		return fmt.Errorf("%w: more than the blob's %d pieces", ErrPieceHashes, p.n)
	}
	p.sums = append(p.sums, sums...)
	p.notifyLocked()
	return nil
}

// Fail ends the list short: waiters get err. A complete list cannot fail.
func (p *PieceHashes) Fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil || len(p.sums) == p.n*sha1.Size {
		return
	}
	p.err = fmt.Errorf("%w: %w", ErrPieceHashes, err)
	p.notifyLocked()
}

func (p *PieceHashes) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// State returns the number of hashes known, the failure if any, and a
// channel closed at the next change.
func (p *PieceHashes) State() (known int, err error, changed <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sums) / sha1.Size, p.err, p.changed
}

// Complete reports whether every hash is known.
func (p *PieceHashes) Complete() bool {
	n, _, _ := p.State()
	return n == p.n
}

// Sums returns the hashes known so far, concatenated (do not modify).
func (p *PieceHashes) Sums() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sums[:len(p.sums):len(p.sums)]
}

// Wait returns the hash of piece i once known.
func (p *PieceHashes) Wait(ctx context.Context, i int) (metainfo.Hash, error) {
	var sum metainfo.Hash
	if i < 0 || i >= p.n {
		return sum, fmt.Errorf("%w: no piece %d of %d", ErrPieceHashes, i, p.n)
	}
	for {
		p.mu.Lock()
		if len(p.sums) >= (i+1)*sha1.Size {
			copy(sum[:], p.sums[i*sha1.Size:])
			p.mu.Unlock()
			return sum, nil
		}
		err, ch := p.err, p.changed
		p.mu.Unlock()
		if err != nil {
			return sum, err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return sum, fmt.Errorf("%w: piece %d: %w", ErrPieceHashes, i, ctx.Err())
		}
	}
}

// HeaderPieceLength names the piece length of the hashes an origin streams.
const HeaderPieceLength = proto.HeaderPieceLength
