package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/internal/testutil"
)

func newGCStore(t *testing.T, capacity int64) (*Store, *[]digest.Digest) {
	t.Helper()
	s := newStore(t)
	// A second per reading, so every access is ordered.
	s.now = testutil.NewTickingClock(time.Unix(1e9, 0), time.Second).Now
	var mu sync.Mutex
	evicted := &[]digest.Digest{}
	s.SetGC(GCConfig{Capacity: capacity, HighWatermark: 80, LowWatermark: 60, OnEvict: func(d digest.Digest) {
		mu.Lock()
		*evicted = append(*evicted, d)
		mu.Unlock()
	}})
	return s, evicted
}

func put(t *testing.T, s *Store, data []byte, d digest.Digest) {
	t.Helper()
	dl, err := s.Create(d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Release()
	if _, err := dl.Write(data); err != nil {
		t.Fatal(err)
	}
}

var seeds atomic.Uint64

// putN stores n distinct blobs of size bytes, each with a .torrent beside it.
func putN(t *testing.T, s *Store, n, size int) []digest.Digest {
	t.Helper()
	ds := make([]digest.Digest, n)
	for i := range ds {
		var data []byte
		data, ds[i] = blob(size, 1000+seeds.Add(1))
		put(t, s, data, ds[i])
		if err := s.WriteMeta(ds[i], "torrent", []byte("t")); err != nil {
			t.Fatal(err)
		}
	}
	return ds
}

func stored(s *Store, d digest.Digest) bool {
	_, err := os.Stat(s.Path(d))
	return err == nil
}

func TestGCEvictsLeastRecentlyUsedUntilBelowLowWatermark(t *testing.T) {
	s, evicted := newGCStore(t, 10_000)
	ds := putN(t, s, 8, 1000) // 8000 bytes: at the high mark, not above
	if n, _ := s.GC(); n != 0 {
		t.Fatalf("GC at exactly the high watermark evicted %d blobs", n)
	}
	// Use the two oldest: they become the most recent.
	if _, err := s.Stat(ds[0]); err != nil {
		t.Fatal(err)
	}
	f, err := s.Open(ds[1])
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	ds = append(ds, putN(t, s, 1, 1000)...) // 9000 > 8000
	n, freed := s.GC()
	if s.Usage() >= 6000 {
		t.Fatalf("usage after GC = %d, want below 6000", s.Usage())
	}
	// 9000 -> 5000: the four least recently used (2, 3, 4, 5) go.
	want := []digest.Digest{ds[2], ds[3], ds[4], ds[5]}
	if n != 4 || freed != 4000 || !equal(*evicted, want) {
		t.Fatalf("GC evicted %d blobs (%d bytes): %v, want %v", n, freed, *evicted, want)
	}
	for i, d := range ds {
		gone := i >= 2 && i <= 5
		if stored(s, d) == gone {
			t.Errorf("blob %d on disk = %v, want %v", i, !gone, !gone)
		}
		if _, err := os.Stat(s.Path(d) + ".torrent"); (err == nil) == gone {
			t.Errorf("metadata of blob %d: %v", i, err)
		}
		if _, err := s.Open(d); gone != errors.Is(err, ErrNotFound) {
			t.Errorf("Open blob %d: %v", i, err)
		}
	}
	if st := s.Stats(); st.Evicted != 4 || st.Freed != 4000 {
		t.Errorf("Stats = %+v", st)
	}
}

func equal(a, b []digest.Digest) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestGCSeedsAccessTimesFromMtimesAtStart(t *testing.T) {
	s, _ := newGCStore(t, 0)
	ds := putN(t, s, 4, 1000)
	base := time.Now().Add(-time.Hour)
	for i, d := range ds { // on disk, blob 2 is the oldest, then 0
		age := map[int]time.Duration{2: 0, 0: time.Minute, 1: 2 * time.Minute, 3: 3 * time.Minute}[i]
		if err := os.Chtimes(s.Path(d), base.Add(age), base.Add(age)); err != nil {
			t.Fatal(err)
		}
	}
	s2, err := Open(s.Root(), s.log)
	if err != nil {
		t.Fatal(err)
	}
	if s2.Usage() != 4000 {
		t.Fatalf("usage after reopen = %d, want 4000", s2.Usage())
	}
	s2.SetGC(GCConfig{Capacity: 4500, HighWatermark: 80, LowWatermark: 60})
	if n, _ := s2.GC(); n != 2 || stored(s2, ds[2]) || stored(s2, ds[0]) || !stored(s2, ds[1]) {
		t.Fatalf("GC evicted %d; want blobs 2 and 0 (oldest mtimes) gone", n)
	}
}

func TestGCSkipsOpenReadersAndRunningDownloads(t *testing.T) {
	s, evicted := newGCStore(t, 10_000)
	ds := putN(t, s, 2, 3000)
	held, _, err := s.OpenOrFollow(context.Background(), ds[0]) // the oldest, open for serving
	if err != nil {
		t.Fatal(err)
	}
	// A download in progress whose follower keeps reading after it commits.
	data, dd := blob(2000, 9)
	dl, err := s.Create(dd, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	follower, _, err := s.OpenOrFollow(context.Background(), dd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dl.Write(data[:1000]); err != nil {
		t.Fatal(err)
	}
	ds = append(ds, putN(t, s, 1, 3000)...) // 9000 bytes verified
	if n, _ := s.GC(); n != 2 || !equal(*evicted, ds[1:3]) || !stored(s, ds[0]) {
		t.Fatalf("GC evicted %v, want %v: not the held blob", *evicted, ds[1:3])
	}
	if _, err := dl.Write(data[1000:]); err != nil { // commits: 5000 bytes
		t.Fatal(err)
	}
	dl.Release()
	s.SetGC(GCConfig{Capacity: 5000, HighWatermark: 80, LowWatermark: 60})
	if n, _ := s.GC(); n != 0 {
		t.Fatalf("GC evicted %d blobs; the held blob and the followed download must stay", n)
	}
	got, err := io.ReadAll(follower)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("follower read %d bytes, %v", len(got), err)
	}
	if b, err := io.ReadAll(held); err != nil || len(b) != 3000 {
		t.Fatalf("held reader read %d bytes, %v", len(b), err)
	}
	held.Close()
	held.Close() // a second Close must not unpin twice
	follower.Close()
	if n, _ := s.GC(); n != 1 || stored(s, ds[0]) || !stored(s, dd) {
		t.Fatalf("after Close, GC evicted %d; want only the oldest (%v) gone", n, ds[0])
	}
}

func TestConcurrentOpensDuringGCSeeWholeBlobsOrNotFound(t *testing.T) {
	s, _ := newGCStore(t, 40<<10)
	const n, size = 16, 4 << 10
	datas := make(map[digest.Digest][]byte, n)
	var ds []digest.Digest
	for i := range n {
		data, d := blob(size, uint64(200+i))
		datas[d] = data
		ds = append(ds, d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var bad atomic.Value
	for r := range 4 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				d := ds[(i*7+r)%n]
				b, _, err := s.OpenOrFollow(ctx, d)
				if errors.Is(err, ErrNotFound) || errors.Is(err, context.Canceled) {
					continue
				}
				if err != nil {
					bad.Store(err.Error())
					return
				}
				got, err := io.ReadAll(b)
				b.Close()
				if err != nil || !bytes.Equal(got, datas[d]) {
					bad.Store("partial or wrong blob " + d.String())
					return
				}
			}
		})
	}
	for range 3 {
		for _, d := range ds {
			if !stored(s, d) {
				if dl, err := s.Create(d, size); err == nil {
					_, _ = dl.Write(datas[d])
					dl.Release()
				}
			}
			s.GC()
		}
	}
	cancel()
	wg.Wait()
	if v := bad.Load(); v != nil {
		t.Fatal(v)
	}
	if s.Stats().Evicted == 0 {
		t.Fatal("GC never evicted anything")
	}
	var onDisk int64
	for _, d := range ds {
		if fi, err := os.Stat(s.Path(d)); err == nil {
			onDisk += fi.Size()
		}
	}
	if onDisk != s.Usage() {
		t.Fatalf("Usage() = %d, files on disk hold %d", s.Usage(), onDisk)
	}
}

func TestCommitWakesRunGC(t *testing.T) {
	s, _ := newGCStore(t, 10_000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { s.RunGC(ctx, time.Hour); close(done) }()
	defer func() { cancel(); <-done }()
	putN(t, s, 9, 1000)
	deadline := time.Now().Add(5 * time.Second)
	for s.Usage() >= 6000 {
		if time.Now().After(deadline) {
			t.Fatalf("usage still %d: the commit did not wake GC", s.Usage())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDeleteRemovesMetadata(t *testing.T) {
	s := newStore(t)
	data, d := blob(100, 42)
	put(t, s, data, d)
	for _, name := range []string{"torrent", "mediatype"} {
		if err := s.WriteMeta(d, name, []byte(name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(d); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(filepath.Dir(s.Path(d)))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Fatalf("after Delete the blob's directory holds %v", ents)
	}
	if _, err := s.ReadMeta(d, "torrent"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ReadMeta after Delete: %v", err)
	}
	if s.Usage() != 0 {
		t.Fatalf("Usage after Delete = %d", s.Usage())
	}
}

func TestCheckGCNamesTheKey(t *testing.T) {
	for _, tc := range []struct {
		capacity  config.ByteSize
		high, low int
		key       string
	}{
		{0, 80, 60, ""},
		{1 << 30, 100, 99, ""},
		{-1, 80, 60, "cache_capacity"},
		{1 << 30, 101, 60, "gc_high_watermark"},
		{1 << 30, 0, 0, "gc_high_watermark"},
		{1 << 30, 80, 80, "gc_low_watermark"},
		{1 << 30, 60, 80, "gc_low_watermark"},
		{1 << 30, 80, -5, "gc_low_watermark"},
	} {
		err := CheckGC(tc.capacity, tc.high, tc.low)
		var ke *config.KeyError
		switch {
		case tc.key == "" && err != nil:
			t.Errorf("CheckGC(%d, %d, %d) = %v, want nil", tc.capacity, tc.high, tc.low, err)
		case tc.key != "" && (!errors.As(err, &ke) || ke.Key != tc.key):
			t.Errorf("CheckGC(%d, %d, %d) = %v, want an error naming %q", tc.capacity, tc.high, tc.low, err, tc.key)
		}
	}
}

// TestPinnedBlobsSurviveGCAndRestart: blobs pinned until a time stay while
// GC evicts older-accessed ones around them, and the pin is read back
// when the store is opened again.
func TestPinnedBlobsSurviveGCAndRestart(t *testing.T) {
	s, evicted := newGCStore(t, 1000)
	ds := putN(t, s, 10, 100) // 1000 bytes: over the 80% mark
	until := s.now().Add(time.Hour)
	for _, d := range ds[:3] { // the least recently used: GC's first picks
		if err := s.PinUntil(d, until); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PinUntil(ds[0], until.Add(-time.Minute)); err != nil || !s.PinnedUntil(ds[0]).Equal(until) {
		t.Fatalf("an earlier pin shortened a later one: %v %v", s.PinnedUntil(ds[0]), err)
	}
	if n, _ := s.GC(); n == 0 {
		t.Fatal("GC evicted nothing")
	}
	for _, d := range ds[:3] {
		if _, err := s.Stat(d); err != nil {
			t.Errorf("pinned blob %s evicted: %v", d, err)
		}
	}
	for _, d := range *evicted {
		for _, p := range ds[:3] {
			if d == p {
				t.Errorf("pinned blob %s evicted", d)
			}
		}
	}
	s2, err := Open(s.Root(), s.log)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds[:3] {
		if got := s2.PinnedUntil(d); !got.Equal(until.Truncate(time.Second)) {
			t.Errorf("pin of %s after reopening: %v, want %v", d, got, until)
		}
	}
}
