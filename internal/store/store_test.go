package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func blob(n int, seed uint64) ([]byte, digest.Digest) {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b, digest.FromBytes(b)
}

func TestSequentialWriteWithConcurrentReaders(t *testing.T) {
	s := newStore(t)
	data, d := blob(3<<20+17, 1)
	dl, err := s.Create(d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(d, int64(len(data))); !errors.Is(err, ErrInProgress) {
		t.Fatalf("second Create: %v, want ErrInProgress", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	got := make([][]byte, 8)
	for i := range got {
		r := dl.NewReader(ctx)
		wg.Go(func() {
			defer r.Close()
			got[i], _ = io.ReadAll(r)
		})
	}
	if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat during download: %v, want ErrNotFound", err)
	}
	for off := 0; off < len(data); off += 100_000 {
		if _, err := dl.Write(data[off:min(off+100_000, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	dl.Release()
	wg.Wait()
	for i, g := range got {
		if !bytes.Equal(g, data) {
			t.Fatalf("reader %d got %d bytes, want the %d written", i, len(g), len(data))
		}
	}
	if n, err := s.Stat(d); err != nil || n != int64(len(data)) {
		t.Fatalf("Stat after commit = %d, %v", n, err)
	}
	assertEmptyDownloads(t, s)
}

func TestOutOfOrderWriteAtAndAdvance(t *testing.T) {
	s := newStore(t)
	data, d := blob(1<<20, 2)
	dl, err := s.Create(d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Release()
	const piece = 256 << 10
	for _, i := range []int{3, 1, 0, 2} {
		if _, err := dl.WriteAt(data[i*piece:(i+1)*piece], int64(i*piece)); err != nil {
			t.Fatal(err)
		}
	}
	if err := dl.Advance(int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if err := dl.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	f, err := s.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if b, _ := io.ReadAll(f); !bytes.Equal(b, data) {
		t.Fatal("committed blob differs")
	}
}

func TestWrongBytesAreNeverCommittedNorFullyServed(t *testing.T) {
	s := newStore(t)
	data, d := blob(512<<10, 3)
	bad := bytes.Clone(data)
	bad[len(bad)-1] ^= 0xff // only the very last byte is wrong
	dl, err := s.Create(d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	r := dl.NewReader(context.Background())
	done := make(chan struct{})
	var got []byte
	var rerr error
	go func() {
		defer close(done)
		got, rerr = io.ReadAll(r)
		r.Close()
	}()
	if _, err := dl.Write(bad); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Write of wrong bytes: %v, want ErrDigestMismatch", err)
	}
	dl.Release()
	<-done
	if !errors.Is(rerr, ErrDigestMismatch) || len(got) >= len(data) {
		t.Fatalf("reader got %d of %d bytes and err %v; want an error before the end", len(got), len(data), rerr)
	}
	if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat: %v, want ErrNotFound", err)
	}
	assertEmptyDownloads(t, s)
	// A fresh download of the same digest may start again.
	dl2, err := s.Create(d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	dl2.Release()
}

func TestAbandonedDownloadLeavesNothing(t *testing.T) {
	s := newStore(t)
	data, d := blob(1000, 4)
	dl, err := s.Create(d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = dl.Write(data[:500])
	dl.Release()
	if err := dl.Err(); err == nil {
		t.Fatal("abandoned download reports no error")
	}
	assertEmptyDownloads(t, s)
	if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat: %v", err)
	}
}

func TestReaderHonoursContext(t *testing.T) {
	s := newStore(t)
	_, d := blob(1000, 5)
	dl, err := s.Create(d, 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Release()
	ctx, cancel := context.WithCancel(context.Background())
	r := dl.NewReader(ctx)
	defer r.Close()
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	if _, err := r.Read(make([]byte, 10)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Read: %v, want context.Canceled", err)
	}
}

func TestEmptyBlob(t *testing.T) {
	s := newStore(t)
	d := digest.FromBytes(nil)
	dl, err := s.Create(d, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := dl.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Stat(d); err != nil || n != 0 {
		t.Fatalf("Stat = %d, %v", n, err)
	}
}

func TestStartupRemovesLeftoversAndCorruptBlobs(t *testing.T) {
	root := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	s, err := Open(root, log)
	if err != nil {
		t.Fatal(err)
	}
	good, gd := blob(4096, 6)
	rot, rd := blob(4096, 7)
	for _, b := range []struct {
		data []byte
		d    digest.Digest
	}{{good, gd}, {rot, rd}} {
		dl, err := s.Create(b.d, int64(len(b.data)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dl.Write(b.data); err != nil {
			t.Fatal(err)
		}
		dl.Release()
	}
	// A half-written download and a flipped bit in a committed blob.
	if err := os.WriteFile(filepath.Join(root, "downloads", gd.Encoded()+".123"), good[:100], 0o644); err != nil {
		t.Fatal(err)
	}
	rot[10] ^= 1
	if err := os.WriteFile(s.Path(rd), rot, 0o644); err != nil {
		t.Fatal(err)
	}

	s2, err := Open(root, log)
	if err != nil {
		t.Fatal(err)
	}
	assertEmptyDownloads(t, s2)
	if f, err := s2.Open(gd); err != nil {
		t.Fatalf("Open good blob: %v", err)
	} else {
		f.Close()
	}
	if _, err := s2.Open(rd); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open corrupt blob: %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(s2.Path(rd)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("corrupt blob still on disk: %v", err)
	}
}

func TestBadDigests(t *testing.T) {
	s := newStore(t)
	for _, d := range []digest.Digest{"", "sha256:xyz", "md5:d41d8cd98f00b204e9800998ecf8427e", "sha512:" + digest.Digest(bytes.Repeat([]byte("a"), 128))} {
		if _, err := s.Stat(d); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Stat(%q) = %v, want a validation error", d, err)
		}
		if _, err := s.Create(d, 1); err == nil {
			t.Errorf("Create(%q) succeeded", d)
		}
	}
}

func assertEmptyDownloads(t *testing.T, s *Store) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(s.Root(), "downloads"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Fatalf("downloads/ holds %d entries, want none", len(ents))
	}
}

// OpenFile gives a read-only descriptor of its own: it sees what the
// download writes, keeps reading after the commit (rename) and the last
// Release, and is refused once the download failed.
func TestDownloadOpenFile(t *testing.T) {
	s := newStore(t)
	data, d := blob(1<<20, 7)
	dl, err := s.Create(d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	f, err := dl.OpenFile()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("x")); err == nil {
		t.Fatal("OpenFile's descriptor is writable")
	}
	if _, err := dl.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := dl.Advance(int64(len(data))); err != nil {
		t.Fatal(err)
	}
	dl.Release()
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after commit and release: %v (equal %v)", err, bytes.Equal(got, data))
	}

	data2, d2 := blob(1<<10, 8)
	dl2, err := s.Create(d2, int64(len(data2)))
	if err != nil {
		t.Fatal(err)
	}
	defer dl2.Release()
	dl2.Fail(errors.New("boom"))
	if _, err := dl2.OpenFile(); err == nil || err.Error() != "boom" {
		t.Fatalf("OpenFile of a failed download: %v, want boom", err)
	}
}

// fileSink is a ReaderFrom that accepts only what sendfile could send (an
// *os.File under an io.LimitedReader) and keeps the bytes.
type fileSink struct {
	bytes.Buffer
	calls int
}

func (s *fileSink) ReadFrom(r io.Reader) (int64, error) {
	lr, ok := r.(*io.LimitedReader)
	if !ok {
		return 0, fmt.Errorf("ReadFrom got %T, want *io.LimitedReader", r)
	}
	if _, ok := lr.R.(*os.File); !ok {
		return 0, fmt.Errorf("ReadFrom got a LimitedReader over %T, want *os.File", lr.R)
	}
	s.calls++
	return s.Buffer.ReadFrom(r)
}

// SendTo follows a growing download, handing the writer file sections only
// (so that a socket sends them with sendfile), from the reader's offset.
func TestReaderSendToFollowsTheDownloadInFileSections(t *testing.T) {
	s := newStore(t)
	data, d := blob(1<<20, 9)
	dl, err := s.Create(d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Release()
	r := dl.NewReader(context.Background())
	defer r.Close()
	const from = 1000
	if _, err := r.Seek(from, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	var sink fileSink
	done := make(chan error, 1)
	go func() {
		_, err := r.SendTo(&sink, int64(len(data)-from))
		done <- err
	}()
	for off := 0; off < len(data); off += 64 << 10 {
		if _, err := dl.Write(data[off : off+64<<10]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.Bytes(), data[from:]) {
		t.Fatal("SendTo sent other bytes than the blob's")
	}
	if sink.calls < 2 {
		t.Errorf("SendTo made %d calls, want one per newly visible section", sink.calls)
	}

	// A download that fails mid-way ends SendTo with its error.
	data2, d2 := blob(1<<20, 10)
	dl2, err := s.Create(d2, int64(len(data2)))
	if err != nil {
		t.Fatal(err)
	}
	defer dl2.Release()
	r2 := dl2.NewReader(context.Background())
	defer r2.Close()
	if _, err := dl2.Write(data2[:4096]); err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(20 * time.Millisecond); dl2.Fail(errors.New("upstream cut")) }()
	var sink2 fileSink
	if n, err := r2.SendTo(&sink2, int64(len(data2))); err == nil || n != 4096 {
		t.Fatalf("SendTo of a failing download: %d bytes, %v; want 4096 and the failure", n, err)
	}
}

// callSink is a fileSink that reports each call's bytes.
type callSink struct {
	fileSink
	got chan int64
}

func (s *callSink) ReadFrom(r io.Reader) (int64, error) {
	n, err := s.fileSink.ReadFrom(r)
	s.got <- n
	return n, err
}

// After its first section SendTo hands over sections of sendBatch, not one
// per newly visible piece, and what is visible goes after sendLinger even
// when no more comes.
func TestReaderSendToBatchesSections(t *testing.T) {
	s := newStore(t)
	const piece = 32 << 10
	data, d := blob(64*piece, 11)
	dl, err := s.Create(d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Release()
	r := dl.NewReader(context.Background())
	defer r.Close()
	sink := &callSink{got: make(chan int64, 128)}
	done := make(chan error, 1)
	go func() {
		_, err := r.SendTo(sink, int64(len(data)))
		done <- err
	}()
	write := func(i int) {
		t.Helper()
		if _, err := dl.Write(data[i*piece : (i+1)*piece]); err != nil {
			t.Fatal(err)
		}
	}
	within := func(what string) int64 {
		t.Helper()
		select {
		case n := <-sink.got:
			return n
		case <-time.After(10 * time.Second):
			t.Fatalf("no section within 10 s: %s", what)
			return 0
		}
	}
	// The first piece goes at once; the second, alone, after the linger.
	write(0)
	if n := within("the first piece"); n != piece {
		t.Fatalf("first section %d bytes, want %d", n, piece)
	}
	write(1)
	if n := within("a lone piece after the linger"); n != piece {
		t.Fatalf("lone section %d bytes, want %d", n, piece)
	}
	// The rest a piece at a time, faster than the linger: whole batches.
	for i := 2; i < 64; i++ {
		write(i)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	close(sink.got)
	calls := 2
	for range sink.got {
		calls++
	}
	// 62 pieces in 256 KiB batches: 8 sections (fewer when a wait found
	// more than a batch visible).
	if calls > 2+8 {
		t.Errorf("SendTo made %d calls for 64 pieces, want at most 10", calls)
	}
	if !bytes.Equal(sink.Bytes(), data) {
		t.Fatal("SendTo sent other bytes than the blob's")
	}
}

// holdSync makes every commit's sync wait until the returned channel is
// closed, then answer err.
func holdSync(t *testing.T, err error) chan struct{} {
	release := make(chan struct{})
	old := syncFile
	syncFile = func(*os.File) error { <-release; return err }
	t.Cleanup(func() { syncFile = old })
	return release
}

// A verified blob reaches its readers while the disk is still syncing it:
// the last byte waits for the digest, not for the commit. A commit that
// then fails keeps nothing, but the readers already have good bytes.
func TestVerifiedBytesDoNotWaitForTheSync(t *testing.T) {
	for _, syncErr := range []error{nil, errors.New("EIO")} {
		t.Run(fmt.Sprint(syncErr), func(t *testing.T) {
			release := holdSync(t, syncErr)

			s := newStore(t)
			data, d := blob(1<<20+3, 7)
			dl, err := s.Create(d, int64(len(data)))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r := dl.NewReader(ctx)
			defer r.Close()
			read := make(chan []byte, 1)
			go func() { b, _ := io.ReadAll(r); read <- b }()
			wrote := make(chan error, 1)
			go func() { _, err := dl.Write(data); wrote <- err }() // blocks in the sync

			if err := dl.WaitVerified(ctx); err != nil {
				t.Fatalf("WaitVerified: %v", err)
			}
			select {
			case got := <-read:
				if !bytes.Equal(got, data) {
					t.Fatalf("reader got %d bytes, want the %d written", len(got), len(data))
				}
			case <-ctx.Done():
				t.Fatal("the reader did not get the last byte while the sync ran")
			}
			select {
			case <-dl.Done():
				t.Fatal("the download was done before its sync returned")
			default:
			}
			if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Stat before the commit: %v, want ErrNotFound", err)
			}

			// A client leaving now (the pull cancelled) must not undo it.
			dl.Fail(errors.New("client left"))
			close(release)
			werr := <-wrote
			dl.Release()
			if syncErr == nil {
				if werr != nil || dl.Wait(ctx) != nil {
					t.Fatalf("commit: write %v, wait %v", werr, dl.Wait(ctx))
				}
				if n, err := s.Stat(d); err != nil || n != int64(len(data)) {
					t.Fatalf("Stat after commit = %d, %v", n, err)
				}
				return
			}
			if werr == nil || dl.Wait(ctx) == nil {
				t.Fatalf("a failed sync: write %v, wait %v; want errors", werr, dl.Wait(ctx))
			}
			if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Stat after a failed commit: %v, want ErrNotFound", err)
			}
			assertEmptyDownloads(t, s)
		})
	}
}

// WaitVerified reports a digest mismatch, never success.
func TestWaitVerifiedReportsAMismatch(t *testing.T) {
	s := newStore(t)
	data, d := blob(64<<10, 8)
	dl, err := s.Create(d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Release()
	data[100] ^= 1
	go dl.Write(data)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := dl.WaitVerified(ctx); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("WaitVerified of wrong bytes: %v, want ErrDigestMismatch", err)
	}
}

// WaitStored answers once the commit ended, not when the last byte was
// readable: a check of the store right after a pull waits there instead of
// racing the sync. It reports a failed commit, and ErrNotFound at once for
// a blob nobody downloads.
func TestWaitStoredWaitsForTheCommit(t *testing.T) {
	for _, syncErr := range []error{nil, errors.New("EIO")} {
		t.Run(fmt.Sprint(syncErr), func(t *testing.T) {
			release := holdSync(t, syncErr)

			s := newStore(t)
			data, d := blob(1<<20+5, 9)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := s.WaitStored(ctx, d); !errors.Is(err, ErrNotFound) {
				t.Fatalf("WaitStored of an unknown blob: %v, want ErrNotFound", err)
			}
			dl, err := s.Create(d, int64(len(data)))
			if err != nil {
				t.Fatal(err)
			}
			go func() { dl.Write(data); dl.Release() }() // blocks in the sync
			if err := dl.WaitVerified(ctx); err != nil {
				t.Fatal(err)
			}
			stored := make(chan error, 1)
			go func() { stored <- s.WaitStored(ctx, d) }()
			select {
			case err := <-stored:
				t.Fatalf("WaitStored returned %v while the sync was held back", err)
			case <-time.After(100 * time.Millisecond):
			}
			close(release)
			err = <-stored
			if syncErr == nil {
				if err != nil {
					t.Fatalf("WaitStored after the commit: %v", err)
				}
				if _, err := s.Stat(d); err != nil {
					t.Fatalf("Stat after WaitStored: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "EIO") {
				t.Fatalf("WaitStored after a failed commit: %v, want the sync's error", err)
			}
		})
	}
}

// Revealed bytes are readable ahead of the in-order prefix (a ranged
// client far ahead gets its piece as soon as it is checked); a reader
// waiting for bytes nobody revealed tells the writer the offset; the last
// byte still waits for the whole digest.
func TestRevealServesARangeAheadOfThePrefix(t *testing.T) {
	s := newStore(t)
	const piece = 64 << 10
	data, d := blob(4*piece, 11)
	dl, err := s.Create(d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Release()
	wanted := make(chan int64, 16)
	dl.SetWant(func(off int64) { wanted <- off })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Pieces 2 and 3 arrive first; only 2 is revealed.
	if _, err := dl.WriteAt(data[2*piece:], 2*piece); err != nil {
		t.Fatal(err)
	}
	dl.Reveal(2*piece, piece)
	r := dl.NewReader(ctx)
	defer r.Close()
	got := make([]byte, piece)
	if _, err := r.ReadAt(got, 2*piece); err != nil || !bytes.Equal(got, data[2*piece:3*piece]) {
		t.Fatalf("ReadAt of the revealed piece: %v (bytes equal: %v)", err, bytes.Equal(got, data[2*piece:3*piece]))
	}
	select {
	case off := <-wanted:
		t.Fatalf("want(%d) called for revealed bytes", off)
	default:
	}

	// Piece 3 (the last) is revealed but its last byte is held back.
	dl.Reveal(3*piece, piece)
	tail := make(chan error, 1)
	go func() {
		b := make([]byte, piece)
		_, err := r.ReadAt(b, 3*piece)
		if err == nil && !bytes.Equal(b, data[3*piece:]) {
			err = errors.New("wrong bytes")
		}
		tail <- err
	}()
	if off := <-wanted; off != 4*piece-1 {
		t.Fatalf("want(%d), want the last byte %d", off, 4*piece-1)
	}
	select {
	case err := <-tail:
		t.Fatalf("the last byte was read before the digest matched (%v)", err)
	case <-time.After(50 * time.Millisecond):
	}

	// A reader at 0 waits, says so, and gets everything once the rest is
	// written and the prefix hashed.
	head := make(chan error, 1)
	go func() {
		b := make([]byte, 2*piece)
		_, err := io.ReadFull(io.NewSectionReader(r, 0, 2*piece), b)
		if err == nil && !bytes.Equal(b, data[:2*piece]) {
			err = errors.New("wrong bytes")
		}
		head <- err
	}()
	if off := <-wanted; off != 0 {
		t.Fatalf("want(%d), want 0", off)
	}
	if _, err := dl.WriteAt(data[:2*piece], 0); err != nil {
		t.Fatal(err)
	}
	if err := dl.Advance(int64(len(data))); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []chan error{head, tail} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
}

// Reveal merges what it is given into disjoint spans in order.
func TestRevealMergesSpans(t *testing.T) {
	s := newStore(t)
	_, d := blob(100, 1)
	dl, err := s.Create(d, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Release()
	for _, sp := range [][2]int64{{50, 10}, {10, 5}, {70, 10}, {60, 10}, {12, 10}, {95, 20}, {200, 5}, {-1, 3}} {
		dl.Reveal(sp[0], sp[1])
	}
	want := []span{{10, 22}, {50, 80}, {95, 100}}
	if !slices.Equal(dl.revealed, want) {
		t.Fatalf("spans %v, want %v", dl.revealed, want)
	}
	dl.mu.Lock()
	ends := []int64{dl.readableLocked(10), dl.readableLocked(21), dl.readableLocked(22), dl.readableLocked(55), dl.readableLocked(99)}
	dl.mu.Unlock()
	if !slices.Equal(ends, []int64{22, 22, 22, 80, 99}) {
		t.Fatalf("readable ends %v", ends)
	}
}

// Vouched bytes are readable and a Vouch to the end commits without the
// store hashing them; a writer that goes on in order after a Vouch (the
// agent's HTTP fallback finishing a swarm's download) hashes the vouched
// bytes from the file first, so its end is checked over every byte: with
// wrong vouched bytes the digest fails.
func TestVouch(t *testing.T) {
	ctx := context.Background()
	const piece = 64 << 10
	data, d := blob(4*piece+100, 9)
	readAll := func(dl *Download) []byte {
		t.Helper()
		r := dl.NewReader(ctx)
		defer r.Close()
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	// The whole blob vouched, pieces written out of order.
	s := newStore(t)
	dl, err := s.Create(d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{2, 0, 4, 1, 3} {
		end := min((i+1)*piece, len(data))
		if _, err := dl.WriteAt(data[i*piece:end], int64(i*piece)); err != nil {
			t.Fatal(err)
		}
	}
	if err := dl.Vouch(2 * piece); err != nil {
		t.Fatal(err)
	}
	r := dl.NewReader(ctx)
	head := make([]byte, 2*piece)
	if _, err := io.ReadFull(r, head); err != nil || !bytes.Equal(head, data[:2*piece]) {
		t.Fatalf("vouched prefix: %v", err)
	}
	r.Close()
	if dl.Hashed() != 2*piece || dl.Verified() {
		t.Fatalf("after a partial vouch: hashed %d, verified %v", dl.Hashed(), dl.Verified())
	}
	if err := dl.Vouch(int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if err := dl.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	dl.Release()
	if f, err := s.Open(d); err != nil {
		t.Fatal(err)
	} else if b, _ := io.ReadAll(f); !bytes.Equal(b, data) {
		t.Fatal("committed blob differs")
	} else {
		f.Close()
	}

	// Vouched, then finished in order: commits, the digest over all.
	for _, wrong := range []bool{false, true} {
		s := newStore(t)
		dl, err := s.Create(d, int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		head := bytes.Clone(data[:3*piece])
		if wrong {
			head[piece] ^= 1
		}
		if _, err := dl.WriteAt(head, 0); err != nil {
			t.Fatal(err)
		}
		if err := dl.Vouch(3 * piece); err != nil {
			t.Fatal(err)
		}
		err = dl.Append(2*piece, data[2*piece:]) // overlaps the vouched prefix, as a Range answer may
		if wrong {
			if !errors.Is(err, ErrDigestMismatch) {
				t.Fatalf("wrong vouched bytes, finished in order: %v, want ErrDigestMismatch", err)
			}
			dl.Release()
			if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Stat: %v, want ErrNotFound", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(dl); !bytes.Equal(got, data) {
			t.Fatal("blob vouched then appended differs")
		}
		dl.Release()
	}
}

// countingHash is sha256 that counts the bytes fed to it; drop feeds it
// none (a hash that lies), fail refuses them (errRefused).
type countingHash struct {
	h          hash.Hash
	n          int64
	drop, fail bool
}

var errRefused = errors.New("hash refused the bytes")

func (c *countingHash) Write(p []byte) (int, error) {
	if c.fail {
		return 0, errRefused
	}
	c.n += int64(len(p))
	if !c.drop {
		c.h.Write(p)
	}
	return len(p), nil
}

func (c *countingHash) Sum(b []byte) []byte { return c.h.Sum(b) }

// A download given a hash (WithHash) checks the digest with it alone: good
// bytes commit, every one fed to it once; a hash whose sum is not the
// digest, or that refuses bytes, fails the download and stores nothing.
func TestWithHash(t *testing.T) {
	data, d := blob(300<<10+7, 11)
	for _, tc := range []struct {
		name string
		h    *countingHash
		want error // nil: committed
	}{
		{"sha256", &countingHash{h: sha256.New()}, nil},
		{"a sum that is not the digest", &countingHash{h: sha256.New(), drop: true}, ErrDigestMismatch},
		{"a hash that refuses bytes", &countingHash{h: sha256.New(), fail: true}, errRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			dl, err := s.Create(d, int64(len(data)), WithHash(tc.h))
			if err != nil {
				t.Fatal(err)
			}
			_, werr := io.Copy(dl, bytes.NewReader(data)) // in 32 KiB writes
			dl.Release()
			_, serr := s.Stat(d)
			if tc.want == nil {
				if werr != nil || serr != nil || tc.h.n != int64(len(data)) {
					t.Fatalf("write: %v; stat: %v; hash fed %d of %d bytes", werr, serr, tc.h.n, len(data))
				}
				return
			}
			if !errors.Is(werr, tc.want) || !errors.Is(serr, ErrNotFound) {
				t.Fatalf("write: %v; stat: %v; want %v and nothing stored", werr, serr, tc.want)
			}
			assertEmptyDownloads(t, s)
		})
	}
}
