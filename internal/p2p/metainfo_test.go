package p2p

import (
	"bytes"
	"crypto/sha1"
	"os"
	"path/filepath"
	"strings"
	"testing"

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

// The piece hashes built while streaming must equal those the library builds
// from the file, so any BitTorrent client agrees with our metainfo.
func TestPieceHasherMatchesLibrary(t *testing.T) {
	for _, size := range []int{1, MinPieceLength - 1, MinPieceLength, 3*MinPieceLength + 5} {
		data := sampleBlob(size)
		d := digest.FromBytes(data)
		ph := NewPieceHasher(MinPieceLength)
		// Odd-sized writes cross piece boundaries.
		for off := 0; off < len(data); off += 1000 {
			ph.Write(data[off:min(off+1000, len(data))])
		}
		raw, err := BuildMetaInfo(d, int64(size), MinPieceLength, ph.Sums())
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), d.Encoded())
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		lib := metainfo.Info{PieceLength: MinPieceLength}
		if err := lib.BuildFromFilePath(path); err != nil {
			t.Fatal(err)
		}
		mi, err := ParseMetaInfo(raw, d)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if !bytes.Equal(mi.Info.Pieces, lib.Pieces) || mi.Info.Length != lib.Length || mi.Info.Name != lib.Name {
			t.Fatalf("size %d: our info differs from the library's", size)
		}
		if !bytes.Equal(mi.Raw(), raw) {
			t.Fatal("Raw() is not the bytes parsed")
		}
	}
}

func TestParseMetaInfoRejects(t *testing.T) {
	data := sampleBlob(40000)
	d := digest.FromBytes(data)
	good := metainfo.Info{Name: d.Encoded(), Length: int64(len(data)), PieceLength: MinPieceLength,
		Pieces: bytes.Repeat([]byte{1}, 3*sha1.Size)}
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
	ph := NewPieceHasher(MinPieceLength)
	ph.Write(data)
	raw, err := BuildMetaInfo(d, int64(len(data)), MinPieceLength, ph.Sums())
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
		{0, 256 << 10},
		{10 << 20, 256 << 10},
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
