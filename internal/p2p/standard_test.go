package p2p

import (
	"bytes"
	"crypto/sha1"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/testutil"
)

// The standard torrent is the same whoever builds it: an origin hashing the
// blob as it arrives from upstream, an agent that received those hashes, or
// a node hashing its stored copy; and it is the torrent any BitTorrent tool
// would make of the blob (a private, single-file torrent named by the
// digest's hex), with the real SHA-1 of every piece.
func TestStandardTorrentSameFromOriginAndAgent(t *testing.T) {
	const size, pieceLen = 1<<20 + 12345, 256 << 10
	blob := sampleBlob(size)
	d := digest.FromBytes(blob)

	// The origin: hashes the blob as it arrives, the last hash held back
	// until the digest matched.
	atOrigin := NewPieceHashes(size, pieceLen)
	atOrigin.HoldLast()
	for b := blob; len(b) > 0; b = b[min(len(b), 100_000):] {
		if _, err := atOrigin.Write(b[:min(len(b), 100_000)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := atOrigin.Publish(); err != nil {
		t.Fatal(err)
	}
	// The agent: receives the origin's list, in two parts.
	atAgent := NewPieceHashes(size, pieceLen)
	sums := atOrigin.Sums()
	if err := atAgent.Add(sums[:2*sha1.Size]); err != nil {
		t.Fatal(err)
	}
	if err := atAgent.Add(sums[2*sha1.Size:]); err != nil {
		t.Fatal(err)
	}
	// A node hashing its verified copy.
	fromFile, err := HashesOf(bytes.NewReader(blob), size, pieceLen)
	if err != nil {
		t.Fatal(err)
	}

	var built []*MetaInfo
	for _, h := range []*PieceHashes{atOrigin, atAgent, fromFile} {
		mi, err := BuildStandard(d, size, h)
		if err != nil {
			t.Fatal(err)
		}
		built = append(built, mi)
	}
	for i, mi := range built[1:] {
		if mi.InfoHash != built[0].InfoHash || !bytes.Equal(mi.InfoBytes, built[0].InfoBytes) {
			t.Errorf("build %d: info-hash %s, the origin's is %s", i+1, mi.InfoHash, built[0].InfoHash)
		}
	}
	std := built[0]
	if !std.Standard || std.Info.Name != d.Encoded() || std.Info.Length != size || std.Info.PieceLength != pieceLen ||
		std.Info.Private == nil || !*std.Info.Private {
		t.Fatalf("info = name %q, length %d, piece length %d, private %v", std.Info.Name, std.Info.Length, std.Info.PieceLength, std.Info.Private)
	}
	n := std.Info.NumPieces()
	if n != 5 {
		t.Fatalf("%d pieces, want 5", n)
	}
	for i := range n {
		end := min(int64(i+1)*pieceLen, size)
		want := sha1.Sum(blob[int64(i)*pieceLen : end])
		if got := std.Info.Piece(i).V1Hash().Unwrap(); got != want {
			t.Errorf("piece %d: hash %x, want the SHA-1 of its bytes %x", i, got, want)
		}
	}

	// The library's own builder, from a file named by the hex digest.
	path := filepath.Join(t.TempDir(), d.Encoded())
	if err := os.WriteFile(path, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	private := true
	lib := metainfo.Info{PieceLength: pieceLen, Private: &private}
	if err := lib.BuildFromFilePath(path); err != nil {
		t.Fatal(err)
	}
	libBytes, err := bencode.Marshal(lib)
	if err != nil {
		t.Fatal(err)
	}
	if metainfo.HashBytes(libBytes) != std.InfoHash {
		t.Errorf("anacrolix/torrent builds info-hash %s for the same file, Shoal %s", metainfo.HashBytes(libBytes), std.InfoHash)
	}

	// The live torrent of the blob is another swarm.
	raw, err := BuildMetaInfo(d, size, pieceLen)
	if err != nil {
		t.Fatal(err)
	}
	live, err := ParseMetaInfo(raw, d)
	if err != nil {
		t.Fatal(err)
	}
	if live.InfoHash == std.InfoHash {
		t.Error("the live and the standard torrent share an info-hash")
	}
}

func TestBuildStandardNeedsEveryHash(t *testing.T) {
	blob := sampleBlob(1 << 20)
	d := digest.FromBytes(blob)
	h := NewPieceHashes(1<<20, 256<<10)
	if _, err := h.Write(blob[:3*256<<10]); err != nil {
		t.Fatal(err)
	}
	if _, err := BuildStandard(d, 1<<20, h); err == nil || !strings.Contains(err.Error(), "3 of 4 piece hashes") {
		t.Fatalf("BuildStandard with 3 of 4 hashes: %v, want an error", err)
	}
}

func TestParseStandardRejects(t *testing.T) {
	const size, pieceLen = 1 << 20, 256 << 10
	blob := sampleBlob(size)
	d := digest.FromBytes(blob)
	h, err := HashesOf(bytes.NewReader(blob), size, pieceLen)
	if err != nil {
		t.Fatal(err)
	}
	good, err := BuildStandard(d, size, h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseStandard(good.Raw(), d); err != nil {
		t.Fatalf("a built torrent does not parse: %v", err)
	}
	live, err := BuildMetaInfo(d, size, pieceLen)
	if err != nil {
		t.Fatal(err)
	}
	withInfo := func(edit func(*metainfo.Info)) []byte {
		var info metainfo.Info
		if err := bencode.Unmarshal(good.InfoBytes, &info); err != nil {
			t.Fatal(err)
		}
		edit(&info)
		ib, err := bencode.Marshal(info)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := bencode.Marshal(metainfo.MetaInfo{InfoBytes: ib})
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	for _, tc := range []struct {
		name string
		raw  []byte
		d    digest.Digest
		want string
	}{
		{"not bencode", []byte("hello"), d, "standard torrent"},
		{"no info", []byte("de"), d, "no info dictionary"},
		{"another blob", good.Raw(), digest.FromString("other"), "not this blob"},
		{"live metainfo", live, d, "piece names"},
		{"not private", withInfo(func(i *metainfo.Info) { i.Private = nil }), d, "not Shoal's"},
		{"extra key", withInfo(func(i *metainfo.Info) { i.Source = "elsewhere" }), d, "not Shoal's"},
		{"a piece missing", withInfo(func(i *metainfo.Info) { i.Pieces = i.Pieces[:3*sha1.Size] }), d, "want 80"},
		{"several files", withInfo(func(i *metainfo.Info) {
			i.Files = []metainfo.FileInfo{{Path: []string{"a"}, Length: size}}
			i.Length = 0
		}), d, "files"},
	} {
		_, err := ParseStandard(tc.raw, tc.d)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one saying %q", tc.name, err, tc.want)
		}
	}
}

// The tracker's .torrent: the same info, so the same info-hash, with its
// announce URL.
func TestStandardWithAnnounce(t *testing.T) {
	blob := sampleBlob(300 << 10)
	d := digest.FromBytes(blob)
	h, err := HashesOf(bytes.NewReader(blob), int64(len(blob)), 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	std, err := BuildStandard(d, int64(len(blob)), h)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := std.WithAnnounce("http://tracker.example:7600/announce")
	if err != nil {
		t.Fatal(err)
	}
	mi, err := metainfo.Load(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if mi.Announce != "http://tracker.example:7600/announce" || mi.HashInfoBytes() != std.InfoHash {
		t.Fatalf("announce %q, info-hash %s; want the tracker's URL and %s", mi.Announce, mi.HashInfoBytes(), std.InfoHash)
	}
	if _, err := ParseStandard(raw, d); err != nil {
		t.Fatalf("the .torrent with announce does not parse: %v", err)
	}
}

// A blob held complete is in two swarms, live and standard: both can be
// joined, Touch sees both, Leave leaves both, and for max_swarms they
// count as one blob.
func TestNodeSeedsLiveAndStandardTorrentsOfOneBlob(t *testing.T) {
	n := newTestNode(t, Config{MaxSwarms: 2})
	seedBoth := func(seed int) digest.Digest {
		blob := sampleBlob(512<<10 + seed)
		d := digest.FromBytes(blob)
		raw, err := BuildMetaInfo(d, int64(len(blob)), 256<<10)
		if err != nil {
			t.Fatal(err)
		}
		live, err := ParseMetaInfo(raw, d)
		if err != nil {
			t.Fatal(err)
		}
		h, err := HashesOf(bytes.NewReader(blob), int64(len(blob)), 256<<10)
		if err != nil {
			t.Fatal(err)
		}
		std, err := BuildStandard(d, int64(len(blob)), h)
		if err != nil {
			t.Fatal(err)
		}
		for _, mi := range []*MetaInfo{live, std} {
			if _, err := n.Seed(mi, bytes.NewReader(blob), nil); err != nil {
				t.Fatalf("seed standard=%v: %v", mi.Standard, err)
			}
		}
		if _, err := n.Seed(std, bytes.NewReader(blob), nil); err != ErrInSwarm {
			t.Fatalf("seeding the standard torrent twice: %v, want ErrInSwarm", err)
		}
		return d
	}
	in := func(d digest.Digest) (bool, bool) {
		return n.Swarm(d.String()) != nil, n.StandardSwarm(d.String()) != nil
	}
	a := seedBoth(1)
	if live, std := n.Touch(a.String()); !live || !std {
		t.Fatalf("Touch = live %v, standard %v; want both", live, std)
	}
	b := seedBoth(2)
	if live, std := in(a); !live || !std {
		t.Fatalf("two blobs with max_swarms 2: the first is in live %v, standard %v", live, std)
	}
	n.Touch(a.String()) // b is now the least recently used
	c := seedBoth(3)
	testutil.Eventually(t, 5*time.Second, func() bool {
		bl, bs := in(b)
		return !bl && !bs
	}, "a third blob with max_swarms 2 left neither swarm of the least recently used one")
	for _, d := range []digest.Digest{a, c} {
		if live, std := in(d); !live || !std {
			t.Fatalf("blob %s: live %v, standard %v; want both", d, live, std)
		}
	}
	n.Leave(a.String())
	if live, std := in(a); live || std {
		t.Fatalf("after Leave: live %v, standard %v", live, std)
	}
}
