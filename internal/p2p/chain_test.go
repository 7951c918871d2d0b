package p2p

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"
)

// chainOf builds blob's sha256 chain by writing it in chunks of chunk bytes
// (as an origin tees a blob arriving from upstream).
func chainOf(t *testing.T, blob []byte, pieceLen int64, chunk int) *PieceHashes {
	t.Helper()
	c, err := NewChainHashes(int64(len(blob)), pieceLen)
	if err != nil {
		t.Fatal(err)
	}
	for b := blob; len(b) > 0; {
		k := min(chunk, len(b))
		if _, err := c.Write(b[:k]); err != nil {
			t.Fatal(err)
		}
		b = b[k:]
	}
	if !c.Complete() {
		t.Fatalf("chain of %d bytes incomplete", len(blob))
	}
	return c
}

// Every piece of a blob passes its check, whatever chunks the list was
// built from; its last entry is the blob's sha256; one wrong byte, a piece
// in another's place, or a short piece fails.
func TestChainChecksEveryPiece(t *testing.T) {
	ctx := context.Background()
	const pl = 16 << 10
	for _, size := range []int{pl / 2, pl, 3 * pl, 5*pl + 100} {
		blob := make([]byte, size)
		rand.Read(blob)
		d := digest.FromBytes(blob)
		n := (size + pl - 1) / pl
		piece := func(i int) []byte { return blob[i*pl : min((i+1)*pl, size)] }
		for _, chunk := range []int{1 << 20, 1000, 64} {
			c := chainOf(t, blob, pl, chunk)
			if last := sha256.Sum256(blob); !bytes.Equal(c.Sums()[(n-1)*32:], last[:]) || !bytes.Equal(c.BlobSum(nil), last[:]) {
				t.Fatalf("size %d, chunk %d: last entry or BlobSum is not the blob's sha256", size, chunk)
			}
			for i := range n {
				if ok, err := c.CheckChain(ctx, d, i, piece(i)); !ok || err != nil {
					t.Fatalf("size %d, chunk %d: piece %d of %d failed (%v)", size, chunk, i, n, err)
				}
			}
		}
		c := chainOf(t, blob, pl, 4096)
		for i := range n {
			bad := bytes.Clone(piece(i))
			bad[len(bad)/2] ^= 1
			if ok, _ := c.CheckChain(ctx, d, i, bad); ok {
				t.Errorf("size %d: piece %d with a flipped byte passed", size, i)
			}
			if ok, _ := c.CheckChain(ctx, d, i, piece(i)[:len(piece(i))-1]); ok {
				t.Errorf("size %d: piece %d one byte short passed", size, i)
			}
			if i > 0 && i < n-1 {
				if ok, _ := c.CheckChain(ctx, d, i, piece(i-1)); ok {
					t.Errorf("size %d: piece %d in the place of %d passed", size, i-1, i)
				}
			}
		}
		if NewPieceHashes(int64(size), pl).BlobSum(nil) != nil {
			t.Errorf("a SHA-1 list gave a blob sum")
		}
		// The last piece answers to the digest, not to the list.
		if ok, _ := c.CheckChain(ctx, digest.FromString("another blob"), n-1, piece(n-1)); ok {
			t.Errorf("size %d: the last piece passed for another digest", size)
		}
	}
}

// Whoever makes the list cannot make wrong bytes pass as the blob: a list
// chained over other bytes passes those bytes piece by piece, but not the
// last piece, which must end at the digest.
func TestChainThatLiesCannotPassTheBlob(t *testing.T) {
	ctx := context.Background()
	const pl = 16 << 10
	blob, other := make([]byte, 4*pl), make([]byte, 4*pl)
	rand.Read(blob)
	rand.Read(other)
	d := digest.FromBytes(blob)
	lie := chainOf(t, other, pl, pl)
	for i := range 3 {
		if ok, _ := lie.CheckChain(ctx, d, i, other[i*pl:(i+1)*pl]); !ok {
			t.Fatalf("the lying list's own piece %d failed: the test proves nothing", i)
		}
	}
	if ok, _ := lie.CheckChain(ctx, d, 3, other[3*pl:]); ok {
		t.Fatal("other bytes passed as the blob's last piece")
	}
	// Nor does the real last piece pass after lying pieces.
	if ok, _ := lie.CheckChain(ctx, d, 3, blob[3*pl:]); ok {
		t.Fatal("the real last piece passed after the lying chain")
	}
}

// Entries arrive whole, the kinds keep apart, and a chain needs pieces of
// whole sha256 blocks.
func TestChainListRules(t *testing.T) {
	if _, err := NewChainHashes(1<<20, 1000); !errors.Is(err, ErrPieceHashes) {
		t.Errorf("pieces of 1000 bytes: %v, want ErrPieceHashes", err)
	}
	c, err := NewChainHashes(3<<14, 1<<14)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Add(make([]byte, 20)); err == nil {
		t.Error("a 20-byte entry joined a sha256 chain")
	}
	if err := c.Add(make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	if known, _, _ := c.State(); known != 2 {
		t.Errorf("known %d entries, want 2", known)
	}
	if _, err := c.Wait(context.Background(), 0); err == nil {
		t.Error("a chain gave a SHA-1")
	}
	if _, err := NewPieceHashes(3<<14, 1<<14).CheckChain(context.Background(), digest.FromString("x"), 0, nil); err == nil {
		t.Error("a SHA-1 list checked a chain")
	}
	for _, s := range []string{"", "sha1", "sha256-chain"} {
		if _, err := ParseHashKind(s); err != nil {
			t.Errorf("ParseHashKind(%q): %v", s, err)
		}
	}
	if _, err := ParseHashKind("md5"); err == nil {
		t.Error("ParseHashKind took md5")
	}
	// One read builds both kinds alike.
	blob := sampleBlob(5<<14 + 7)
	lists, err := HashListsOf(bytes.NewReader(blob), int64(len(blob)), 1<<14, HashSHA1, HashChain)
	if err != nil {
		t.Fatal(err)
	}
	sha, _ := HashesOf(bytes.NewReader(blob), int64(len(blob)), 1<<14)
	if !bytes.Equal(lists[0].Sums(), sha.Sums()) || !bytes.Equal(lists[1].Sums(), chainOf(t, blob, 1<<14, 999).Sums()) {
		t.Error("HashListsOf differs from the lists built alone")
	}
}

// An agent's empty chain takes the SHA-1s of an origin older than chains,
// and nothing once an entry is in.
func TestAdoptAnOlderOriginsKind(t *testing.T) {
	c, err := NewChainHashes(2<<14, 1<<14)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Adopt(HashSHA1); err != nil {
		t.Fatal(err)
	}
	if c.Kind() != HashSHA1 {
		t.Fatalf("kind %s after adopting sha1", c.Kind())
	}
	if err := c.Add(make([]byte, 40)); err != nil || !c.Complete() {
		t.Fatalf("two SHA-1s: %v, complete %v", err, c.Complete())
	}
	if _, err := c.Wait(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if err := c.Adopt(HashChain); err == nil {
		t.Error("a list with entries changed its kind")
	}
}
