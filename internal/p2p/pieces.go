package p2p

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"encoding/hex"
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

// HashKind is what a list of piece hashes holds.
type HashKind string

const (
	// HashSHA1 is each piece's SHA-1, 20 bytes: BitTorrent's, what the
	// library engine and the standard torrents check.
	HashSHA1 HashKind = "sha1"
	// HashChain is the blob's sha256 cut at the pieces, 32 bytes a piece:
	// for every piece but the last, the sha256 state (its chaining value,
	// the eight words of FIPS 180-4) after the blob's bytes up to the
	// piece's end; for the last piece, the blob's digest. Piece i is
	// checked by resuming sha256 from entry i-1 (the standard start for
	// piece 0) over its bytes: a piece that gives entry i, or the digest
	// for the last, is the blob's, and once every piece has passed, the
	// blob's sha256 is its digest, as surely as if it had been hashed in
	// order (whoever made the list: a list that lies fails a piece, it
	// cannot make wrong bytes pass the last). One hash a byte checks both
	// the pieces and the blob, where SHA-1 pieces and the blob's sha256
	// took two (each a fifth of a swarm's CPU at N = 128 on 64 MiB).
	// Piece lengths are powers of two of at least 16 KiB, whole sha256
	// blocks.
	HashChain HashKind = "sha256-chain"
)

// Size is the bytes of one entry of this kind.
func (k HashKind) Size() int {
	if k == HashChain {
		return sha256.Size
	}
	return sha1.Size
}

// ParseHashKind is the kind named s ("" is SHA-1, what origins that name
// none send).
func ParseHashKind(s string) (HashKind, error) {
	switch HashKind(s) {
	case "", HashSHA1:
		return HashSHA1, nil
	case HashChain:
		return HashChain, nil
	}
	return "", fmt.Errorf("unknown piece hash kind %q (want %q or %q)", s, HashSHA1, HashChain)
}

// PieceHashes is the hashes of every piece of one blob (of a HashKind), in
// order, as far as they are known: complete for a stored blob, growing
// while an origin hashes a blob arriving from upstream (Write) or while an
// agent receives the origin's list (Add). Readers wait for the entry they
// need (Wait, Entry).
type PieceHashes struct {
	kind             HashKind
	pieceLen, length int64
	n                int

	// Write's state: the hash being written (of the piece, or for a chain
	// of the blob so far), bytes so far, and the last entry while held
	// back (see HoldLast).
	h        hash.Hash
	pos      int64
	holdLast bool
	held     []byte

	mu      sync.Mutex
	sums    []byte
	err     error
	changed chan struct{} // closed and replaced on every change
	waiters []awaiter     // Await's, closed once their count is known
}

// awaiter is an Await: ch closes once k hashes are known (or the list
// failed).
type awaiter struct {
	k  int
	ch chan struct{}
}

// NewPieceHashes is an empty list of SHA-1s for a blob of length bytes in
// pieces of pieceLen.
func NewPieceHashes(length, pieceLen int64) *PieceHashes {
	return newPieceHashes(HashSHA1, length, pieceLen)
}

// NewChainHashes is an empty sha256 chain (HashChain) for a blob of length
// bytes in pieces of pieceLen, a multiple of sha256's 64-byte block.
func NewChainHashes(length, pieceLen int64) (*PieceHashes, error) {
	if pieceLen <= 0 || pieceLen%sha256.BlockSize != 0 {
		return nil, fmt.Errorf("%w: a sha256 chain needs pieces of whole 64-byte blocks, not %d bytes", ErrPieceHashes, pieceLen)
	}
	return newPieceHashes(HashChain, length, pieceLen), nil
}

func newPieceHashes(kind HashKind, length, pieceLen int64) *PieceHashes {
	n := int((length + pieceLen - 1) / pieceLen)
	h := sha1.New()
	if kind == HashChain {
		h = sha256.New()
	}
	return &PieceHashes{kind: kind, pieceLen: pieceLen, length: length, n: n, h: h,
		sums: make([]byte, 0, n*kind.Size()), changed: make(chan struct{})}
}

// HashesOf hashes a whole blob of length bytes read from r (SHA-1s).
func HashesOf(r io.Reader, length, pieceLen int64) (*PieceHashes, error) {
	l, err := HashListsOf(r, length, pieceLen, HashSHA1)
	if err != nil {
		return nil, err
	}
	return l[0], nil
}

// HashListsOf hashes a whole blob of length bytes read from r into a list
// of each kind asked for, in one read.
func HashListsOf(r io.Reader, length, pieceLen int64, kinds ...HashKind) ([]*PieceHashes, error) {
	lists := make([]*PieceHashes, len(kinds))
	ws := make([]io.Writer, len(kinds))
	for i, k := range kinds {
		if k == HashChain {
			var err error
			if lists[i], err = NewChainHashes(length, pieceLen); err != nil {
				return nil, err
			}
		} else {
			lists[i] = NewPieceHashes(length, pieceLen)
		}
		ws[i] = lists[i]
	}
	if _, err := io.CopyBuffer(io.MultiWriter(ws...), io.LimitReader(r, length), make([]byte, 256<<10)); err != nil {
		return nil, fmt.Errorf("hash pieces: %w", err)
	}
	for _, l := range lists {
		if !l.Complete() {
			return nil, fmt.Errorf("hash pieces: blob shorter than %d bytes", length)
		}
	}
	return lists, nil
}

// Kind of the hashes.
func (p *PieceHashes) Kind() HashKind {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.kind
}

// Adopt makes an empty list filled by Add one of kind k: an agent asks an
// origin for a sha256 chain, and an origin older than chains answers with
// SHA-1s. It fails once an entry is known.
func (p *PieceHashes) Adopt(k HashKind) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if k == p.kind {
		return nil
	}
	if len(p.sums) > 0 || p.pos > 0 {
		return fmt.Errorf("%w: a list of %s hashes cannot take %s ones", ErrPieceHashes, p.kind, k)
	}
	p.kind, p.sums = k, make([]byte, 0, p.n*k.Size())
	p.notifyLocked()
	return nil
}

// NumPieces of the blob.
func (p *PieceHashes) NumPieces() int { return p.n }

// PieceLength the hashes are for.
func (p *PieceHashes) PieceLength() int64 { return p.pieceLen }

// Write hashes the next bytes of the blob (written in order, from the first)
// and publishes each piece's hash once the piece is complete (a list
// Write fills keeps its kind: see Adopt).
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
			var sum []byte
			switch {
			case p.kind != HashChain:
				sum = p.h.Sum(nil)
				p.h.Reset()
			case end == p.length:
				sum = p.h.Sum(nil) // the blob's digest
			default:
				sum = chainValue(p.h)
			}
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

// BlobSum appends to b the sha256 of the bytes Write took so far (the
// blob's digest once all are in) for a sha256 chain, which hashes them for
// its piece values anyway; nil for another kind. A store download checks
// the blob with it (store.WithHash) instead of hashing every byte again.
func (p *PieceHashes) BlobSum(b []byte) []byte {
	if p.kind != HashChain {
		return nil
	}
	return p.h.Sum(b)
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

// Add appends whole entries (a multiple of the kind's size) after those
// known.
func (p *PieceHashes) Add(sums []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.err != nil:
		return p.err
	case len(sums)%p.kind.Size() != 0:
		return fmt.Errorf("%w: %d bytes is not a whole number of %s hashes", ErrPieceHashes, len(sums), p.kind)
	case len(p.sums)+len(sums) > p.n*p.kind.Size():
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
	if p.err != nil || len(p.sums) == p.n*p.kind.Size() {
		return
	}
	p.err = fmt.Errorf("%w: %w", ErrPieceHashes, err)
	p.notifyLocked()
}

func (p *PieceHashes) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
	known := len(p.sums) / p.kind.Size()
	kept := p.waiters[:0]
	for _, w := range p.waiters {
		if p.err != nil || known >= w.k {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	clear(p.waiters[len(kept):])
	p.waiters = kept
}

// Await returns a channel closed once at least k hashes are known, or the
// list failed: a reader that wants a batch of hashes wakes for the batch,
// not for each hash as State's channel does (an origin streams the list to
// every agent of a swarm while the blob arrives).
func (p *PieceHashes) Await(k int) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch := make(chan struct{})
	if p.err != nil || len(p.sums)/p.kind.Size() >= k {
		close(ch)
		return ch
	}
	p.waiters = append(p.waiters, awaiter{k, ch})
	return ch
}

// State returns the number of hashes known, the failure if any, and a
// channel closed at the next change.
func (p *PieceHashes) State() (known int, err error, changed <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sums) / p.kind.Size(), p.err, p.changed
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

// Wait returns the SHA-1 of piece i once known (a list of HashSHA1).
func (p *PieceHashes) Wait(ctx context.Context, i int) (metainfo.Hash, error) {
	var sum metainfo.Hash
	if k := p.Kind(); k != HashSHA1 {
		return sum, fmt.Errorf("%w: a list of %s hashes has no SHA-1", ErrPieceHashes, k)
	}
	e, err := p.Entry(ctx, i)
	copy(sum[:], e)
	return sum, err
}

// Entry returns entry i once known (do not modify).
func (p *PieceHashes) Entry(ctx context.Context, i int) ([]byte, error) {
	if i < 0 || i >= p.n {
		return nil, fmt.Errorf("%w: no piece %d of %d", ErrPieceHashes, i, p.n)
	}
	for {
		p.mu.Lock()
		size := p.kind.Size() // under mu: Adopt may change it
		if len(p.sums) >= (i+1)*size {
			e := p.sums[i*size : (i+1)*size : (i+1)*size]
			p.mu.Unlock()
			return e, nil
		}
		err, ch := p.err, p.changed
		p.mu.Unlock()
		if err != nil {
			return nil, err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: piece %d: %w", ErrPieceHashes, i, ctx.Err())
		}
	}
}

// CheckChain reports whether data, all of piece i of blob d, is the
// blob's by a list of HashChain (see there): sha256 resumed from entry i-1
// over it gives entry i, or for the last piece d itself. It waits for
// entry i (and so i-1).
func (p *PieceHashes) CheckChain(ctx context.Context, d digest.Digest, i int, data []byte) (bool, error) {
	return p.checkChain(ctx, d, i, func(h hash.Hash) (int64, error) {
		n, err := h.Write(data)
		return int64(n), err
	})
}

// CheckChainReader is CheckChain of the piece read from r (through buf).
func (p *PieceHashes) CheckChainReader(ctx context.Context, d digest.Digest, i int, r io.Reader, buf []byte) (bool, error) {
	return p.checkChain(ctx, d, i, func(h hash.Hash) (int64, error) { return io.CopyBuffer(h, r, buf) })
}

// checkChain is CheckChain of the bytes feed writes to the hash.
func (p *PieceHashes) checkChain(ctx context.Context, d digest.Digest, i int, feed func(hash.Hash) (int64, error)) (bool, error) {
	if k := p.Kind(); k != HashChain {
		return false, fmt.Errorf("%w: a list of %s hashes is no sha256 chain", ErrPieceHashes, k)
	}
	want, err := p.Entry(ctx, i)
	if err != nil {
		return false, err
	}
	h := sha256.New()
	if i > 0 {
		prev, err := p.Entry(ctx, i-1)
		if err != nil {
			return false, err
		}
		if err := resumeSHA256(h, prev, int64(i)*p.pieceLen); err != nil {
			return false, err
		}
	}
	n, err := feed(h)
	if err != nil {
		return false, fmt.Errorf("hash piece %d: %w", i, err)
	}
	end := min(int64(i+1)*p.pieceLen, p.length)
	if n != end-int64(i)*p.pieceLen {
		return false, nil
	}
	if end == p.length {
		// The last piece ends the blob: its sum is the digest, whatever
		// the list says.
		return d.Algorithm() == digest.SHA256 && hex.EncodeToString(h.Sum(nil)) == d.Encoded(), nil
	}
	return bytes.Equal(chainValue(h), want), nil
}

// chainValue is the chaining value of h, a sha256 that has hashed a whole
// number of 64-byte blocks: the eight state words of its marshalled form
// (magic, state, pending block, length; stable across Go versions).
func chainValue(h hash.Hash) []byte {
	b, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil || len(b) != sha256StateSize {
		panic(fmt.Sprintf("p2p: sha256 state: %d bytes, %v", len(b), err))
	}
	return b[len(sha256Magic) : len(sha256Magic)+sha256.Size]
}

// resumeSHA256 sets h (a fresh sha256) to the state after length bytes (a
// whole number of blocks) whose chaining value is cv.
func resumeSHA256(h hash.Hash, cv []byte, length int64) error {
	b := make([]byte, 0, sha256StateSize)
	b = append(b, sha256Magic...)
	b = append(b, cv...)
	b = append(b, make([]byte, sha256.BlockSize)...)
	b = binary.BigEndian.AppendUint64(b, uint64(length))
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(b); err != nil {
		return fmt.Errorf("%w: resume sha256: %w", ErrPieceHashes, err)
	}
	return nil
}

// The marshalled sha256 state: magic, eight words, a block, the length.
const (
	sha256Magic     = "sha\x03"
	sha256StateSize = len(sha256Magic) + sha256.Size + sha256.BlockSize + 8
)

// HeaderPieceLength names the piece length of the hashes an origin streams.
const HeaderPieceLength = proto.HeaderPieceLength
