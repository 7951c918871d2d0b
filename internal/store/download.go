package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
)

// Download is a blob being written into the store. Writers either append in
// order (Write) or write anywhere (WriteAt) and then declare a written prefix
// (Advance). Every byte of that prefix is fed to sha256 in order; readers see
// bytes only once they are part of the hashed prefix, and the last byte only
// once the whole digest matched and the file was renamed into place. So a
// reader never gets a complete copy of wrong bytes.
type Download struct {
	s    *Store
	d    digest.Digest
	size int64
	f    *os.File
	tmp  string

	hashMu sync.Mutex // serialises Write/Advance/Vouch
	h      Hash
	tee    io.Writer // optional observer of the hashed stream, in order
	hashed int64     // the verified prefix
	fed    int64     // of it, the bytes fed to h (less after a Vouch)
	buf    []byte

	mu       sync.Mutex
	visible  int64  // bytes readers may read: the hashed prefix
	revealed []span // checked bytes past it, readable too (Reveal); sorted, disjoint
	want     func(off int64)
	matched  bool // the whole blob matched its digest (commit may still run)
	done     bool
	err      error
	changed  chan struct{} // closed and replaced whenever visible/done/err change
	fin      chan struct{} // closed once, on commit or failure
	refs     int
}

// Option configures a Download.
type Option func(*Download)

// WithTee feeds every hashed byte, in order, to w as well (e.g. to build
// piece hashes while the blob streams in).
func WithTee(w io.Writer) Option { return func(dl *Download) { dl.tee = w } }

// Hash is what a download checks its bytes with: their sha256, fed in
// order, whose Sum must be the digest. hash.Hash is one.
type Hash interface {
	io.Writer
	Sum(b []byte) []byte
}

// WithHash makes the download feed its bytes to h, which must compute
// their sha256, instead of a sha256 of its own: a writer that hashes every
// byte anyway (an origin's sha256 chain, whose last value is the blob's
// digest) spares the blob a second sha256. The digest check is the same:
// h's Sum against the digest, before any reader sees the last byte. An
// error from h's Write fails the download.
func WithHash(h Hash) Option { return func(dl *Download) { dl.h = h } }

// Create starts a download of d, size bytes long. If d is already stored it
// returns ErrExists wrapped; if one is running, ErrInProgress. The caller holds
// one reference and must call Release when it no longer writes.
func (s *Store) Create(d digest.Digest, size int64, opts ...Option) (*Download, error) {
	if err := checkDigest(d); err != nil {
		return nil, err
	}
	if size < 0 {
		return nil, fmt.Errorf("create %s: negative size %d", d, size)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.active[d]; ok {
		return nil, ErrInProgress
	}
	f, err := os.CreateTemp(s.downloadsDir(), d.Encoded()+".*")
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", d, err)
	}
	if err := reserve(f, size); err != nil {
		f.Close()
		os.Remove(f.Name())
		if errors.Is(err, syscall.ENOSPC) {
			err = fmt.Errorf("%w (%d bytes): %w", ErrNoSpace, size, err)
		}
		return nil, fmt.Errorf("create %s: %w", d, err)
	}
	dl := &Download{s: s, d: d, size: size, f: f, tmp: f.Name(), h: sha256.New(), changed: make(chan struct{}), fin: make(chan struct{}), refs: 1}
	for _, o := range opts {
		o(dl)
	}
	s.active[d] = dl
	if size == 0 {
		go dl.Advance(0) // an empty blob is complete at once
	}
	return dl, nil
}

// span is a byte range [off, end).
type span struct{ off, end int64 }

// Reveal makes bytes [off, off+n), written with WriteAt and checked by the
// caller (a piece against its hash), readable before the in-order prefix
// reaches them: a client asking for a range far ahead gets it as soon as
// its pieces are in. They are checked as much as the prefix is until the
// whole digest matched; the last byte still waits for that.
func (dl *Download) Reveal(off, n int64) {
	end := min(off+n, dl.size)
	if off < 0 || off >= end {
		return
	}
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if end <= dl.visible || dl.done || dl.err != nil {
		return
	}
	// Insert and merge with the spans it touches.
	i := 0
	for i < len(dl.revealed) && dl.revealed[i].end < off {
		i++
	}
	j := i
	for j < len(dl.revealed) && dl.revealed[j].off <= end {
		off, end = min(off, dl.revealed[j].off), max(end, dl.revealed[j].end)
		j++
	}
	dl.revealed = append(dl.revealed[:i], append([]span{{off, end}}, dl.revealed[j:]...)...)
	dl.notifyLocked()
}

// SetWant registers f, called with the offset a reader is about to wait
// for (bytes not yet readable), so that the writer can fetch them sooner;
// nil removes it.
func (dl *Download) SetWant(f func(off int64)) {
	dl.mu.Lock()
	dl.want = f
	dl.mu.Unlock()
}

// readableLocked is the end of the readable run of bytes that starts at
// off, or off if the byte at off is not readable yet.
func (dl *Download) readableLocked(off int64) int64 {
	if off < dl.visible {
		return dl.visible
	}
	held := dl.size - 1 // the last byte waits for the digest
	if dl.matched {
		held = dl.size
	}
	for _, sp := range dl.revealed {
		if sp.off <= off && off < sp.end {
			return max(off, min(sp.end, held))
		}
	}
	return off
}

func (dl *Download) notifyLocked() {
	close(dl.changed)
	dl.changed = make(chan struct{})
}

// Digest of the blob.
func (dl *Download) Digest() digest.Digest { return dl.d }

// Size of the blob.
func (dl *Download) Size() int64 { return dl.size }

// Done is closed when the download committed or failed; see Err.
func (dl *Download) Done() <-chan struct{} { return dl.fin }

// Wait blocks until the download commits (nil) or fails (its error) or ctx ends.
func (dl *Download) Wait(ctx context.Context) error {
	return dl.await(ctx, func() bool { return dl.done })
}

// await blocks until ready (called with mu held) holds, or the download
// fails (its error), or ctx ends.
func (dl *Download) await(ctx context.Context, ready func() bool) error {
	for {
		dl.mu.Lock()
		ok, err, ch := ready(), dl.err, dl.changed
		dl.mu.Unlock()
		if ok {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (dl *Download) isDone() bool {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	return dl.done
}

// Err is the failure, if any.
func (dl *Download) Err() error {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	return dl.err
}

// Hashed is how many leading bytes have been verified-in-order so far.
func (dl *Download) Hashed() int64 {
	dl.hashMu.Lock()
	defer dl.hashMu.Unlock()
	return dl.hashed
}

// WriteAt writes p at off (any order). The bytes become readable once a
// later Advance covers them.
func (dl *Download) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > dl.size {
		return 0, fmt.Errorf("write %s: range [%d,%d) outside blob of %d bytes", dl.d, off, off+int64(len(p)), dl.size)
	}
	if err := dl.Err(); err != nil {
		return 0, err
	}
	n, err := dl.f.WriteAt(p, off)
	if err != nil {
		// A disk that refuses a write (I/O error, full, read-only) will not
		// take the retry either: end the download now rather than stall.
		err = fmt.Errorf("write %s: %w", dl.d, err)
		dl.fail(err)
	}
	return n, err
}

// ReadAt reads written bytes regardless of verification (for piece hashing by
// the P2P layer only; serve clients through NewReader).
func (dl *Download) ReadAt(p []byte, off int64) (int, error) { return dl.f.ReadAt(p, off) }

// OpenFile opens the download's file read-only: a descriptor of the reader's
// own, independent of the download's references (the P2P layer serves
// pieces through one that may outlive its swarm by a moment).
func (dl *Download) OpenFile() (*os.File, error) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.err != nil {
		return nil, dl.err
	}
	path := dl.tmp
	if dl.done {
		path = dl.s.Path(dl.d)
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) && !dl.done {
		// Committed but not yet published: renamed to the blob path.
		f, err = os.Open(dl.s.Path(dl.d))
	}
	if err != nil {
		return nil, fmt.Errorf("open download %s: %w", dl.d, err)
	}
	return f, nil
}

// Write appends p at the end of the hashed prefix, hashes it and makes it
// readable: the path for a sequential source such as an upstream GET.
func (dl *Download) Write(p []byte) (int, error) {
	dl.hashMu.Lock()
	defer dl.hashMu.Unlock()
	if dl.hashed+int64(len(p)) > dl.size {
		err := fmt.Errorf("write %s: more than the expected %d bytes", dl.d, dl.size)
		dl.fail(err)
		return 0, err
	}
	if err := dl.Err(); err != nil {
		return 0, err
	}
	if err := dl.catchUpLocked(); err != nil {
		return 0, err
	}
	n, err := dl.f.WriteAt(p, dl.hashed)
	if err != nil {
		err = fmt.Errorf("write %s: %w", dl.d, err)
		dl.fail(err)
		return n, err
	}
	return n, dl.hashLocked(p)
}

// Append writes p, which starts at offset off of the blob, as the continuation
// of the hashed prefix: bytes below the prefix are already there and are
// skipped; a gap above it is an error. It lets a sequential source (an HTTP
// Range answer) finish a download that another writer started.
func (dl *Download) Append(off int64, p []byte) error {
	dl.hashMu.Lock()
	defer dl.hashMu.Unlock()
	if off > dl.hashed {
		return fmt.Errorf("append %s at %d: the hashed prefix ends at %d", dl.d, off, dl.hashed)
	}
	skip := dl.hashed - off
	if skip >= int64(len(p)) {
		return nil
	}
	p = p[skip:]
	if dl.hashed+int64(len(p)) > dl.size {
		err := fmt.Errorf("append %s: more than the expected %d bytes", dl.d, dl.size)
		dl.fail(err)
		return err
	}
	if err := dl.catchUpLocked(); err != nil {
		return err
	}
	if _, err := dl.f.WriteAt(p, dl.hashed); err != nil {
		err = fmt.Errorf("write %s: %w", dl.d, err)
		dl.fail(err)
		return err
	}
	return dl.hashLocked(p)
}

// Acquire takes one more reference (released with Release), so a download
// outlives the writer that started it.
func (dl *Download) Acquire() { dl.acquire() }

// Advance declares that bytes [0, upTo) have been written (by WriteAt) and are
// correct at the piece level; they are read back, hashed in order and made
// readable. Advancing to Size verifies the digest and commits the blob.
func (dl *Download) Advance(upTo int64) error {
	dl.hashMu.Lock()
	defer dl.hashMu.Unlock()
	if upTo > dl.size {
		upTo = dl.size
	}
	if upTo > dl.hashed {
		if err := dl.catchUpLocked(); err != nil {
			return err
		}
	}
	if dl.buf == nil && upTo > dl.hashed {
		dl.buf = make([]byte, 1<<20)
	}
	for dl.hashed < upTo {
		if err := dl.Err(); err != nil {
			return err
		}
		n := min(int64(len(dl.buf)), upTo-dl.hashed)
		if _, err := dl.f.ReadAt(dl.buf[:n], dl.hashed); err != nil {
			err = fmt.Errorf("read back %s at %d: %w", dl.d, dl.hashed, err)
			dl.fail(err)
			return err
		}
		if err := dl.hashLocked(dl.buf[:n]); err != nil {
			return err
		}
	}
	if dl.size == 0 && upTo == 0 {
		return dl.hashLocked(nil)
	}
	return nil
}

// hashLocked feeds p (which sits at dl.hashed) to the hash and publishes it.
func (dl *Download) hashLocked(p []byte) error {
	if dl.hashed == dl.size && len(p) == 0 && dl.isDone() {
		return nil
	}
	if _, err := dl.h.Write(p); err != nil {
		dl.fail(err)
		return err
	}
	if dl.tee != nil {
		if _, err := dl.tee.Write(p); err != nil {
			dl.fail(err)
			return err
		}
	}
	dl.hashed += int64(len(p))
	dl.fed = dl.hashed
	if dl.hashed < dl.size {
		// Hold the last byte back until the whole digest matched.
		dl.publish(min(dl.hashed, dl.size-1), false)
		return nil
	}
	if got := hex.EncodeToString(dl.h.Sum(nil)); got != dl.d.Encoded() {
		err := fmt.Errorf("%w: %s has sha256:%s", ErrDigestMismatch, dl.d, got)
		dl.fail(err)
		return err
	}
	return dl.matchedLocked()
}

// Vouch declares that bytes [0, upTo) were written (by WriteAt) and
// checked by the caller with the blob's own hash: sha256 resumed piece by
// piece along a chain that starts where sha256 starts (p2p's HashChain),
// upTo = Size meaning the chain ended at the digest. Those bytes are then
// the blob's as surely as if Advance had hashed them, without reading them
// back and hashing them again: they become readable, and at Size the blob
// commits. A writer that continues in order afterwards (Write, Append,
// Advance) first feeds the vouched bytes to the hash from the file, so
// that its own end is checked against the digest over every byte.
func (dl *Download) Vouch(upTo int64) error {
	dl.hashMu.Lock()
	defer dl.hashMu.Unlock()
	upTo = min(upTo, dl.size)
	if upTo <= dl.hashed {
		return nil
	}
	if err := dl.Err(); err != nil {
		return err
	}
	dl.hashed = upTo
	if dl.hashed < dl.size {
		dl.publish(min(dl.hashed, dl.size-1), false)
		return nil
	}
	return dl.matchedLocked()
}

// catchUpLocked feeds the vouched bytes not yet hashed to the hash (and
// the tee), from the file.
func (dl *Download) catchUpLocked() error {
	if dl.fed == dl.hashed {
		return nil
	}
	buf := make([]byte, min(1<<20, dl.hashed-dl.fed))
	for dl.fed < dl.hashed {
		n := min(int64(len(buf)), dl.hashed-dl.fed)
		if _, err := dl.f.ReadAt(buf[:n], dl.fed); err != nil {
			err = fmt.Errorf("read back %s at %d: %w", dl.d, dl.fed, err)
			dl.fail(err)
			return err
		}
		if _, err := dl.h.Write(buf[:n]); err != nil {
			dl.fail(err)
			return err
		}
		if dl.tee != nil {
			if _, err := dl.tee.Write(buf[:n]); err != nil {
				dl.fail(err)
				return err
			}
		}
		dl.fed += n
	}
	return nil
}

// matchedLocked ends a download whose whole blob matched its digest.
func (dl *Download) matchedLocked() error {
	// Verified: readers may have the last byte now. Making the blob
	// durable (sync, rename) waits for the disk to write the whole file
	// back, up to a second per few hundred MiB with agents finishing
	// together, and a client streaming the blob has no reason to wait for
	// it. If the commit fails, readers still got verified bytes; the blob
	// is just not kept.
	dl.mu.Lock()
	dl.matched = true
	dl.mu.Unlock()
	dl.publish(dl.size, false)
	if err := dl.s.commit(dl); err != nil {
		dl.fail(err)
		return err
	}
	dl.publish(dl.size, true)
	return nil
}

// WaitVerified waits until the whole blob has matched its digest (before
// it is committed: see Wait) or the download failed.
func (dl *Download) WaitVerified(ctx context.Context) error {
	return dl.await(ctx, func() bool { return dl.matched })
}

func (dl *Download) publish(visible int64, done bool) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if visible > dl.visible {
		dl.visible = visible
		for len(dl.revealed) > 0 && dl.revealed[0].end <= visible {
			dl.revealed = dl.revealed[1:]
		}
	}
	if done && !dl.done {
		dl.done = true
		close(dl.fin)
	}
	dl.notifyLocked()
}

// Fail aborts the download: readers get err, nothing is committed and the
// temporary file is removed. Once the blob matched its digest it is no
// longer the caller's to abort: its commit decides how it ends.
func (dl *Download) Fail(err error) {
	if err == nil {
		err = errors.New("download aborted")
	}
	dl.end(err, true)
}

// Verified reports whether the whole blob matched its digest (its commit
// may still be running).
func (dl *Download) Verified() bool {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	return dl.matched
}

func (dl *Download) fail(err error) { dl.end(err, false) }

// end fails the download unless it already ended, or (unlessVerified)
// its digest matched; the check and the failure are one step, so that a
// commit starting meanwhile is never cut off.
func (dl *Download) end(err error, unlessVerified bool) {
	dl.mu.Lock()
	if dl.done || dl.err != nil || (unlessVerified && dl.matched) {
		dl.mu.Unlock()
		return
	}
	dl.err = err
	close(dl.fin)
	dl.notifyLocked()
	dl.mu.Unlock()
	dl.s.forget(dl)
	// Unlink now: readers holding the descriptor fail anyway, and a crash
	// leaves nothing behind that looks like data.
	if rerr := os.Remove(dl.tmp); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		dl.s.log.Warn("remove failed download", "digest", dl.d, "path", dl.tmp, "err", rerr)
	}
}

func (dl *Download) acquire() {
	dl.mu.Lock()
	dl.refs++
	dl.mu.Unlock()
}

// Release drops the caller's reference; the file closes with the last one.
// A writer that releases before the blob committed aborts the download.
func (dl *Download) Release() {
	dl.mu.Lock()
	dl.refs--
	last := dl.refs == 0
	done := dl.done
	dl.mu.Unlock()
	if last {
		if !done {
			dl.fail(errors.New("download abandoned"))
		}
		dl.f.Close()
	}
}

// Path of the file: the temporary path while running, the blob path after.
func (dl *Download) Path() string {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.done {
		return dl.s.Path(dl.d)
	}
	return filepath.Clean(dl.tmp)
}

// waitBatch is waitVisible for a follower that already has what came
// before off: once the byte at off is readable it waits on until the
// readable run reaches want (or the blob's end), or linger passes,
// whichever comes first. A failure or ctx's end returns what is readable;
// the next wait reports it.
func (dl *Download) waitBatch(ctx context.Context, off, want int64, linger time.Duration) (int64, error) {
	end, err := dl.waitVisible(ctx, off)
	if err != nil || end >= min(want, dl.size) {
		return end, err
	}
	t := time.NewTimer(linger)
	defer t.Stop()
	for {
		dl.mu.Lock()
		end = dl.readableLocked(off)
		failed, ch := dl.err != nil, dl.changed
		dl.mu.Unlock()
		if end >= min(want, dl.size) || failed {
			return end, nil
		}
		select {
		case <-ch:
		case <-t.C:
			return end, nil
		case <-ctx.Done():
			return end, nil
		}
	}
}

// waitVisible blocks until the byte at off is readable, or the download
// fails, or ctx ends. It returns the end of the readable run from off.
// Before it waits it tells the writer what it waits for (SetWant).
func (dl *Download) waitVisible(ctx context.Context, off int64) (int64, error) {
	var end int64
	ready := func() bool { end = dl.readableLocked(off); return end > off }
	dl.mu.Lock()
	ok, want := ready(), dl.want
	dl.mu.Unlock()
	if ok {
		return end, nil
	}
	if want != nil {
		want(off)
	}
	if err := dl.await(ctx, ready); err != nil {
		return 0, err
	}
	return end, nil
}
