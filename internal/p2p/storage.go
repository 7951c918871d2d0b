package p2p

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/store"
)

// blobStorage backs one torrent with one blob file. For a seed every piece is
// complete from the start (the blob was verified against its digest). For a
// download pieces start incomplete (never trusting bytes already on disk);
// each piece the client has hash-checked extends the store download's
// in-order prefix, which sha256s it and, at the end, commits the blob.
type blobStorage struct {
	// r is read for peers and piece checks, under rmu; closeR closes it
	// readerLinger after the swarm is left (see retire).
	r      io.ReaderAt
	closeR func()
	rmu    sync.RWMutex
	rgone  bool
	dl     *store.Download // nil for a seed
	// For a download: the piece hashes (perhaps still arriving), the piece
	// names the library compares SelfHash's answer with (engine
	// "library"), who sent which block, and whom to ban when a piece turns
	// out bad. ctx ends when the swarm is left, so that no hasher waits for
	// a hash beyond that.
	hashes *PieceHashes
	names  []byte
	blame  *blame
	judge  peerJudge
	ctx    context.Context

	// For a download on the library: requests in flight per piece and the
	// nudger's wake-up (see nudge.go).
	pending []atomic.Int32
	wake    chan struct{}
	// prefix: pieces [0, prefix) are complete. Written under mu; an atomic
	// so that request picking (the engine's, the library's callbacks) reads
	// it without this lock.
	prefix atomic.Int32

	mu       sync.Mutex
	complete []bool
	pieceLen int64
	length   int64
}

// peerJudge acts on what a download's blame finds (the Node): it bans
// the senders of bad pieces, holds a suspect off for a while (the library
// path, see blame) and says who is banned or held.
type peerJudge interface {
	ban(peers []netip.Addr)
	suspect(a netip.Addr)
	blocked(a netip.Addr) bool
}

func newSeedStorage(r io.ReaderAt, closeR func(), info *metainfo.Info) *blobStorage {
	n := info.NumPieces()
	s := &blobStorage{r: r, closeR: closeR, complete: make([]bool, n), pieceLen: info.PieceLength, length: info.Length}
	s.prefix.Store(int32(n))
	for i := range s.complete {
		s.complete[i] = true
	}
	return s
}

// newDownloadStorage writes into dl and reads through r, a read-only
// descriptor of dl's file that the storage owns. Its ctx is set when the
// swarm is joined (Node.add).
func newDownloadStorage(dl *store.Download, r *os.File, info *metainfo.Info, hashes *PieceHashes, judge peerJudge) *blobStorage {
	return &blobStorage{r: r, closeR: func() { r.Close() }, dl: dl, complete: make([]bool, info.NumPieces()), pieceLen: info.PieceLength, length: info.Length,
		hashes: hashes, names: info.Pieces, blame: newBlame(), judge: judge,
		pending: make([]atomic.Int32, info.NumPieces()), wake: make(chan struct{}, 1)}
}

// readerLinger is how long the reader stays open after the swarm is left.
// The library serves a peer's request by unlocking, then reading: a read
// may start just after Drop returned, and a read that fails on a dropped
// torrent leaves the request behind and panics the library (v1.61.0,
// PeerConn.servePeerRequest). Such a read is a goroutine already running;
// seconds are ample.
var readerLinger = 5 * time.Second // a var for tests

var errStorageGone = errors.New("storage: swarm left")

// ReadAt reads the blob's bytes (written ones, for a download).
func (s *blobStorage) ReadAt(b []byte, off int64) (int, error) {
	s.rmu.RLock()
	defer s.rmu.RUnlock()
	if s.rgone {
		return 0, errStorageGone
	}
	return s.r.ReadAt(b, off)
}

// retire closes the reader once no read can still come (see readerLinger).
func (s *blobStorage) retire() {
	time.AfterFunc(readerLinger, func() {
		s.rmu.Lock()
		s.rgone = true
		s.rmu.Unlock()
		if s.closeR != nil {
			s.closeR()
		}
	})
}

// OpenTorrent implements storage.ClientImpl.
func (s *blobStorage) OpenTorrent(_ context.Context, info *metainfo.Info, _ metainfo.Hash) (storage.TorrentImpl, error) {
	if info.Length != s.length || info.PieceLength != s.pieceLen {
		return storage.TorrentImpl{}, fmt.Errorf("storage: info describes %d bytes in %d-byte pieces, storage holds %d in %d", info.Length, info.PieceLength, s.length, s.pieceLen)
	}
	return storage.TorrentImpl{
		Piece: func(p metainfo.Piece) storage.PieceImpl {
			return &blobPiece{s: s, index: p.Index(), off: p.Offset(), length: p.Length()}
		},
		Close: func() error { return nil },
	}, nil
}

type blobPiece struct {
	s      *blobStorage
	index  int
	off    int64
	length int64
}

func (p *blobPiece) ReadAt(b []byte, off int64) (int, error) {
	if off >= p.length {
		return 0, io.EOF
	}
	if rest := p.length - off; int64(len(b)) > rest {
		n, err := p.s.ReadAt(b[:rest], p.off+off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return p.s.ReadAt(b, p.off+off)
}

var errSeedReadOnly = errors.New("storage: seeded blob is read-only")

// errBadPiece reports a piece that failed its hash as an error, so that the
// library fetches it again without banning anyone itself (see blame.go).
var errBadPiece = errors.New("storage: piece does not match its hash")

// hashBufs are the read buffers of pieces hashed from disk: a swarm of
// small pieces hashes dozens a second, and a fresh 256 KiB buffer each was
// a measurable share of the GC's work.
var hashBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// pieceSum is the SHA-1 of the piece of length bytes at off, read from disk.
func (s *blobStorage) pieceSum(off, length int64) (sum [sha1.Size]byte, err error) {
	h := sha1.New()
	buf := hashBufs.Get().(*[]byte)
	_, err = io.CopyBuffer(h, io.NewSectionReader(s, off, length), *buf)
	hashBufs.Put(buf)
	h.Sum(sum[:0])
	return sum, err
}

// checkChainFromDisk checks piece i of blob d, read from disk, along its
// sha256 chain (HashChain).
func (s *blobStorage) checkChainFromDisk(ctx context.Context, d digest.Digest, i int) (bool, error) {
	off := int64(i) * s.pieceLen
	buf := hashBufs.Get().(*[]byte)
	defer hashBufs.Put(buf)
	return s.hashes.CheckChainReader(ctx, d, i, io.NewSectionReader(s, off, min(s.pieceLen, s.length-off)), *buf)
}

// SelfHash implements storage.SelfHashing: the client asks the storage for a
// piece's hash instead of hashing it itself. Shoal checks the piece against
// its real SHA-1 (waiting for it if the origin is still hashing the blob)
// and answers with the piece's name from the info dictionary when it
// matches (see pieces.go). Doing it here also lets Shoal see each verdict,
// to blame and ban the peers that sent bad blocks.
func (p *blobPiece) SelfHash() (metainfo.Hash, error) {
	var sum metainfo.Hash
	s := p.s
	if s.hashes == nil {
		return sum, errSeedReadOnly // a seed: every piece is complete, never hashed
	}
	sum, err := s.pieceSum(p.off, p.length)
	if err != nil {
		return sum, fmt.Errorf("storage: hash piece %d: %w", p.index, err)
	}
	want, err := s.hashes.Wait(s.ctx, p.index)
	if err != nil {
		// Nobody is to blame: the piece is fetched again, and a swarm that
		// cannot verify anything stalls into the HTTP fallback.
		return sum, err
	}
	if sum != want {
		// The library refetches from every peer it has: a suspect is held
		// off so that the next attempt comes from the others.
		bad, suspect := s.blame.hashFailed(p.index, s.judge.blocked)
		if len(bad) > 0 {
			s.judge.ban(bad)
		} else if suspect.IsValid() {
			s.judge.suspect(suspect)
		}
		return sum, fmt.Errorf("%w: piece %d", errBadPiece, p.index)
	}
	bad := s.blame.verified(p.index, func(b []byte, off int64) error {
		_, err := s.ReadAt(b, p.off+off)
		return err
	})
	if len(bad) > 0 {
		s.judge.ban(bad)
	}
	copy(sum[:], s.names[p.index*sha1.Size:])
	return sum, nil
}

func (p *blobPiece) WriteAt(b []byte, off int64) (int, error) {
	if p.s.dl == nil {
		return 0, errSeedReadOnly
	}
	if off < 0 || off+int64(len(b)) > p.length {
		return 0, fmt.Errorf("storage: write [%d,%d) outside piece %d of %d bytes", off, off+int64(len(b)), p.index, p.length)
	}
	return p.s.dl.WriteAt(b, p.off+off)
}

// MarkComplete is called by the client after the piece passed its hash check.
func (p *blobPiece) MarkComplete() error { return p.s.markComplete(p.index) }

// markComplete records that piece i passed its hash check: it extends the
// in-order prefix, which the store download sha256s and, at the end,
// commits.
func (s *blobStorage) markComplete(i int) error {
	s.mu.Lock()
	s.complete[i] = true
	old := int(s.prefix.Load())
	prefix := old
	for prefix < len(s.complete) && s.complete[prefix] {
		prefix++
	}
	s.prefix.Store(int32(prefix))
	upTo := min(int64(prefix)*s.pieceLen, s.length)
	s.mu.Unlock()
	if s.dl == nil {
		return nil
	}
	if prefix != old {
		s.kick()
	}
	// Checked against its hash: a client reading this far ahead may have it.
	off := int64(i) * s.pieceLen
	s.dl.Reveal(off, min(s.pieceLen, s.length-off))
	if s.hashes.Kind() == HashChain {
		// Each piece was checked along the blob's sha256 chain, the last
		// against the digest: the prefix is the blob's, and the end
		// commits it.
		return s.dl.Vouch(upTo)
	}
	// Hash the newly contiguous bytes into the blob's sha256 (and publish them
	// to readers); reaching the end commits the blob or fails the download.
	return s.dl.Advance(upTo)
}

// prefixPieces is how many leading pieces are complete.
func (s *blobStorage) prefixPieces() int { return int(s.prefix.Load()) }

func (p *blobPiece) MarkNotComplete() error {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	if p.s.dl == nil {
		return nil // a verified seed stays complete
	}
	if p.index < int(p.s.prefix.Load()) {
		return fmt.Errorf("storage: piece %d already hashed into the blob", p.index)
	}
	p.s.complete[p.index] = false
	if int32(p.index) == p.s.prefix.Load() {
		p.s.kick() // fetched again: the nudger may raise it
	}
	return nil
}

func (p *blobPiece) Completion() storage.Completion {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return storage.Completion{Ok: true, Complete: p.s.complete[p.index]}
}

// refuseStorage is the client's default storage: every torrent must bring
// its own, so nothing is ever written to the working directory.
type refuseStorage struct{}

func (refuseStorage) OpenTorrent(context.Context, *metainfo.Info, metainfo.Hash) (storage.TorrentImpl, error) {
	return storage.TorrentImpl{}, errors.New("storage: torrent added without blob storage")
}
