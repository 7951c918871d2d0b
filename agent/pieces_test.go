package agent

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/proto"
)

// The agent asks an origin for the blob's sha256 chain and takes what it
// answers: the chain from a current origin, SHA-1s (checked as before)
// from one older than chains, which names no kind; an unknown kind is an
// error that sends it to the next origin.
func TestPiecesFromTakesTheOriginsKind(t *testing.T) {
	const size, pieceLen = 5 << 14, 1 << 14
	blob := bytes.Repeat([]byte("shoal"), size/5)
	d := digest.FromBytes(blob)
	lists, err := p2p.HashListsOf(bytes.NewReader(blob), size, pieceLen, p2p.HashSHA1, p2p.HashChain)
	if err != nil {
		t.Fatal(err)
	}
	sha1s, chain := lists[0], lists[1]
	for _, tc := range []struct {
		name, answer string // the origin's kind header ("-": none)
		want         *p2p.PieceHashes
		fails        bool
	}{
		{"current origin", "sha256-chain", chain, false},
		{"origin older than chains", "-", sha1s, false},
		{"unknown kind", "md5", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				asked = r.URL.Query().Get(proto.QueryHash)
				body := sha1s.Sums()
				if tc.answer == "sha256-chain" {
					body = chain.Sums()
				}
				w.Header().Set(proto.HeaderPieceLength, strconv.Itoa(pieceLen))
				if tc.answer != "-" {
					w.Header().Set(proto.HeaderPieceHash, tc.answer)
				}
				w.Write(body)
			}))
			defer srv.Close()
			a := &Agent{log: slog.New(slog.DiscardHandler)}
			hashes, err := p2p.NewChainHashes(size, pieceLen)
			if err != nil {
				t.Fatal(err)
			}
			oc := proto.OriginClient{Client: proto.Client{HTTP: srv.Client()}}
			err = a.piecesFrom(context.Background(), oc, srv.URL, "library/x", d, hashes)
			if asked != "sha256-chain" {
				t.Errorf("asked for %q, want sha256-chain", asked)
			}
			if tc.fails {
				if err == nil || !strings.Contains(err.Error(), "md5") {
					t.Fatalf("err %v, want one naming the kind", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if hashes.Kind() != tc.want.Kind() || !bytes.Equal(hashes.Sums(), tc.want.Sums()) {
				t.Fatalf("list of %s, %d bytes; want %s, %d", hashes.Kind(), len(hashes.Sums()), tc.want.Kind(), len(tc.want.Sums()))
			}
		})
	}
}
