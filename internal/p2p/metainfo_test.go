package p2p

import (
	"bytes"
	"context"
	"crypto/sha1"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/opencontainers/go-digest"
)

func sampleBlob(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>9)
	}
	return b
}

// The piece hashes built while streaming must equal those the library
// builds from the file: they are real BitTorrent v1 piece hashes.
func TestPieceHashesMatchLibrary(t *testing.T) {
	for _, size := range []int{1, MinPieceLength - 1, MinPieceLength, 3*MinPieceLength + 5} {
		data := sampleBlob(size)
		d := digest.FromBytes(data)
		ph := NewPieceHashes(int64(size), MinPieceLength)
		// Odd-sized writes cross piece boundaries.
		for off := 0; off < len(data); off += 1000 {
			if _, err := ph.Write(data[off:min(off+1000, len(data))]); err != nil {
				t.Fatal(err)
			}
		}
		if !ph.Complete() {
			t.Fatalf("size %d: %d bytes written, list not complete", size, size)
		}
		path := filepath.Join(t.TempDir(), d.Encoded())
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		lib := metainfo.Info{PieceLength: MinPieceLength}
		if err := lib.BuildFromFilePath(path); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ph.Sums(), lib.Pieces) {
			t.Fatalf("size %d: our piece hashes differ from the library's", size)
		}
		if _, err := ph.Write([]byte{1}); err == nil {
			t.Fatal("a byte past the blob's end was accepted")
		}
		raw, err := BuildMetaInfo(d, int64(size), MinPieceLength)
		if err != nil {
			t.Fatal(err)
		}
		mi, err := ParseMetaInfo(raw, d)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if mi.Info.Length != lib.Length || mi.Info.Name != lib.Name || mi.Info.NumPieces() != lib.NumPieces() {
			t.Fatalf("size %d: our info differs from the library's", size)
		}
		if !bytes.Equal(mi.Raw(), raw) {
			t.Fatal("Raw() is not the bytes parsed")
		}
	}
}

// The info-hash is known before the blob: it depends on the digest, size and
// piece length only, so two origins agree on the swarm of a blob.
func TestInfoHashNeedsNoContent(t *testing.T) {
	d := digest.FromString("a")
	a, _ := BuildMetaInfo(d, 1<<20, MinPieceLength)
	b, _ := BuildMetaInfo(d, 1<<20, MinPieceLength)
	c, _ := BuildMetaInfo(d, 1<<20, 2*MinPieceLength)
	e, _ := BuildMetaInfo(digest.FromString("b"), 1<<20, MinPieceLength)
	ma, _ := ParseMetaInfo(a, d)
	mb, _ := ParseMetaInfo(b, d)
	mc, _ := ParseMetaInfo(c, d)
	me, err := ParseMetaInfo(e, digest.FromString("b"))
	if err != nil {
		t.Fatal(err)
	}
	if ma.InfoHash != mb.InfoHash || ma.InfoHash == mc.InfoHash || ma.InfoHash == me.InfoHash {
		t.Fatalf("info-hashes: same %v, other piece length %v, other blob %v", ma.InfoHash == mb.InfoHash, ma.InfoHash == mc.InfoHash, ma.InfoHash == me.InfoHash)
	}
}

// sampleHashes returns the SHA-1s of a sample blob of n pieces, and an
// empty list for them.
func sampleHashes(t *testing.T, n int) (full, empty *PieceHashes) {
	t.Helper()
	data := sampleBlob(n * MinPieceLength)
	full, err := HashesOf(bytes.NewReader(data), int64(len(data)), MinPieceLength)
	if err != nil {
		t.Fatal(err)
	}
	return full, NewPieceHashes(int64(len(data)), MinPieceLength)
}

// Hashes arrive while readers wait for them; a list that fails releases its
// waiters with the cause.
func TestPieceHashesWait(t *testing.T) {
	full, ph := sampleHashes(t, 4)
	got := make(chan metainfo.Hash)
	go func() {
		h, err := ph.Wait(context.Background(), 2)
		if err != nil {
			t.Error(err)
		}
		got <- h
	}()
	if err := ph.Add(full.Sums()[:2*sha1.Size]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
		t.Fatal("Wait(2) returned before piece 2's hash was known")
	case <-time.After(50 * time.Millisecond):
	}
	if err := ph.Add(full.Sums()[2*sha1.Size : 3*sha1.Size]); err != nil {
		t.Fatal(err)
	}
	if h := <-got; !bytes.Equal(h[:], full.Sums()[2*sha1.Size:3*sha1.Size]) {
		t.Fatal("Wait(2) returned the wrong hash")
	}
	if err := ph.Add(make([]byte, 7)); err == nil {
		t.Fatal("a partial hash was accepted")
	}
	ph.Fail(errors.New("origin gone"))
	if _, err := ph.Wait(context.Background(), 3); !errors.Is(err, ErrPieceHashes) || !strings.Contains(err.Error(), "origin gone") {
		t.Fatalf("Wait after Fail: %v", err)
	}
	if h, err := ph.Wait(context.Background(), 1); err != nil || !bytes.Equal(h[:], full.Sums()[sha1.Size:2*sha1.Size]) {
		t.Fatalf("a known hash is still served after Fail: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := NewPieceHashes(10, MinPieceLength).Wait(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with a cancelled context: %v", err)
	}
	if err := full.Add(full.Sums()[:sha1.Size]); err == nil {
		t.Fatal("a hash past the last piece was accepted")
	}
}

// Await's channel closes once its count of hashes is known, not at each
// hash before; at once for a count known; and on the list's failure.
func TestPieceHashesAwait(t *testing.T) {
	full, ph := sampleHashes(t, 8)
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	four, six := ph.Await(4), ph.Await(6)
	for i := range 3 {
		if err := ph.Add(full.Sums()[i*sha1.Size : (i+1)*sha1.Size]); err != nil {
			t.Fatal(err)
		}
		if closed(four) || closed(six) {
			t.Fatalf("Await(4) or Await(6) closed with %d hashes known", i+1)
		}
	}
	if err := ph.Add(full.Sums()[3*sha1.Size : 4*sha1.Size]); err != nil {
		t.Fatal(err)
	}
	if !closed(four) || closed(six) {
		t.Fatalf("4 hashes known: Await(4) closed %v, Await(6) closed %v; want true, false", closed(four), closed(six))
	}
	if !closed(ph.Await(2)) {
		t.Fatal("Await(2) with 4 hashes known is not closed")
	}
	ph.Fail(errors.New("origin gone"))
	if !closed(six) || !closed(ph.Await(8)) {
		t.Fatal("Await after the list failed is not closed")
	}
}

func TestParseMetaInfoRejects(t *testing.T) {
	data := sampleBlob(40000)
	d := digest.FromBytes(data)
	good := metainfo.Info{Name: d.Encoded(), Length: int64(len(data)), PieceLength: MinPieceLength,
		Pieces: pieceNames(d, 3)}
	enc := func(info metainfo.Info) []byte {
		ib, err := bencode.Marshal(info)
		if err != nil {
			t.Fatal(err)
		}
		b, err := bencode.Marshal(metainfo.MetaInfo{InfoBytes: ib})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if _, err := ParseMetaInfo(enc(good), d); err != nil {
		t.Fatalf("good metainfo rejected: %v", err)
	}
	for _, tc := range []struct {
		name string
		raw  []byte
		want string
	}{
		{"not bencode", []byte("hello"), "metainfo"},
		{"no info", []byte("d8:announce3:urle"), "no info"},
		{"other blob", enc(func() metainfo.Info { i := good; i.Name = "abc"; return i }()), "not this blob"},
		{"odd piece length", enc(func() metainfo.Info { i := good; i.PieceLength = 3 << 14; return i }()), "power of two"},
		{"tiny piece length", enc(func() metainfo.Info { i := good; i.PieceLength = 1024; return i }()), "power of two"},
		{"too few hashes", enc(func() metainfo.Info { i := good; i.Pieces = i.Pieces[:40]; return i }()), "piece hashes"},
		{"real hashes (old format)", enc(func() metainfo.Info { i := good; i.Pieces = bytes.Repeat([]byte{1}, 3*sha1.Size); return i }()), "piece names"},
		{"multi-file", enc(func() metainfo.Info {
			i := good
			i.Files = []metainfo.FileInfo{{Length: 1, Path: []string{"a"}}}
			return i
		}()), "files"},
	} {
		_, err := ParseMetaInfo(tc.raw, d)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
}

func FuzzParseMetaInfo(f *testing.F) {
	data := sampleBlob(40000)
	d := digest.FromBytes(data)
	raw, err := BuildMetaInfo(d, int64(len(data)), MinPieceLength)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte("d4:infod6:lengthi1e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee"))
	f.Fuzz(func(t *testing.T, b []byte) {
		mi, err := ParseMetaInfo(b, d)
		if err != nil {
			return
		}
		if int64(mi.Info.NumPieces()) != (mi.Info.Length+mi.Info.PieceLength-1)/mi.Info.PieceLength {
			t.Fatalf("accepted inconsistent metainfo: %+v", mi.Info)
		}
	})
}

func TestPieceLengthFor(t *testing.T) {
	for _, tc := range []struct{ size, want int64 }{
		{0, 32 << 10},
		{1 << 20, 32 << 10},
		{16 << 20, 32 << 10},
		{32 << 20, 64 << 10},
		{64<<20 - 1, 64 << 10},
		{64 << 20, 128 << 10},
		{128 << 20, 256 << 10},
		{256<<20 - 1, 256 << 10},
		{256 << 20, 512 << 10},
		{1 << 30, 2 << 20},
		{2 << 30, 4 << 20},
		{100 << 30, 4 << 20},
	} {
		if got := PieceLengthFor(tc.size); got != tc.want {
			t.Errorf("PieceLengthFor(%d) = %d, want %d", tc.size, got, tc.want)
		}
	}
}
