package origin_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/internal/store"
	"github.com/shoal-dev/shoal/origin"
	"github.com/shoal-dev/shoal/proto"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

// TestConcurrentPullsShareOneUpstreamFetch: 20 blob GETs and 5 metainfo
// GETs for a cold blob cause one upstream GET; every client gets the exact
// bytes, and blob clients get their first bytes while the blob is still
// arriving (streaming, not store-and-forward).
func TestConcurrentPullsShareOneUpstreamFetch(t *testing.T) {
	const (
		size     = 8 << 20
		rate     = 4 << 20 // bytes/s: the upstream transfer takes about 2 s
		blobGets = 20
		metaGets = 5
	)
	reg := startRegistry(t, localregistry.Options{UploadRate: rate})
	data := localregistry.RandomBytes(size, 1)
	d := pushBlob(t, reg, testRepo, data)
	reg.ResetCounts()
	o := startOrigin(t, "", nil, upstreamFor(t, reg.URL()))

	type result struct {
		err         error
		ttfb        time.Duration
		whileFetch  bool // first byte arrived while the store had no verified blob
		contentLen  int64
		sum         [32]byte
		metaBody    []byte
		metaInfoHdr string
	}
	results := make([]result, blobGets+metaGets)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			<-gate
			res := &results[i]
			u := blobURL(o, testRepo, d)
			if i >= blobGets {
				u = metaURL(o, testRepo, d)
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				res.err = err
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(resp.Body)
				res.err = fmt.Errorf("status %d: %s", resp.StatusCode, b)
				return
			}
			if i >= blobGets {
				res.metaBody, res.err = io.ReadAll(resp.Body)
				res.metaInfoHdr = resp.Header.Get("X-Shoal-Info-Hash")
				return
			}
			res.contentLen = resp.ContentLength
			first := make([]byte, 1)
			if _, err := io.ReadFull(resp.Body, first); err != nil {
				res.err = err
				return
			}
			res.ttfb = time.Since(start)
			_, serr := o.Store().Stat(d)
			res.whileFetch = errors.Is(serr, store.ErrNotFound)
			h := sha256.New()
			h.Write(first)
			if _, err := io.Copy(h, resp.Body); err != nil {
				res.err = err
				return
			}
			copy(res.sum[:], h.Sum(nil))
		})
	}
	close(gate)
	wg.Wait()
	total := time.Since(start)

	want := sha256.Sum256(data)
	var minTTFB time.Duration = -1
	streamed := 0
	for i, res := range results[:blobGets] {
		if res.err != nil {
			t.Fatalf("blob GET %d: %v", i, res.err)
		}
		if res.contentLen != size {
			t.Errorf("blob GET %d: Content-Length %d, want %d", i, res.contentLen, size)
		}
		if res.sum != want {
			t.Errorf("blob GET %d: body differs from the blob", i)
		}
		if minTTFB < 0 || res.ttfb < minTTFB {
			minTTFB = res.ttfb
		}
		if res.whileFetch {
			streamed++
		}
	}
	if got := reg.BlobGets(d.String()); got != 1 {
		t.Errorf("registry saw %d blob GETs, want 1", got)
	}
	if got := o.UpstreamGets(); got != 1 {
		t.Errorf("origin sent %d upstream GETs, want 1", got)
	}
	if streamed == 0 {
		t.Errorf("no client got its first byte before the blob was committed (fastest %s of %s)", minTTFB, total)
	}
	if minTTFB > total/4 {
		t.Errorf("fastest time to first byte %s is not well below the total %s", minTTFB, total)
	}
	t.Logf("total %s, fastest first byte %s, %d/%d clients streamed", total, minTTFB, streamed, blobGets)

	var first []byte
	for i, res := range results[blobGets:] {
		if res.err != nil {
			t.Fatalf("metainfo GET %d: %v", i, res.err)
		}
		if first == nil {
			first = res.metaBody
		} else if !bytes.Equal(first, res.metaBody) {
			t.Errorf("metainfo GET %d differs from the first", i)
		}
		mi, err := p2p.ParseMetaInfo(res.metaBody, d)
		if err != nil {
			t.Fatalf("metainfo GET %d: %v", i, err)
		}
		if mi.Info.Length != size || mi.Info.PieceLength != 1<<20 {
			t.Errorf("metainfo length %d piece %d, want %d and %d", mi.Info.Length, mi.Info.PieceLength, size, 1<<20)
		}
		if n, want := mi.Info.NumPieces(), (size+(1<<20)-1)/(1<<20); n != want {
			t.Errorf("metainfo has %d pieces, want %d", n, want)
		}
		if res.metaInfoHdr != mi.InfoHash.HexString() {
			t.Errorf("X-Shoal-Info-Hash %q, want %s", res.metaInfoHdr, mi.InfoHash.HexString())
		}
	}
	if !o.Seeding(d) {
		t.Error("origin is not seeding the blob it fetched")
	}
}

// TestRangeOnFallback: ranges are served exactly, from a blob still
// arriving as well as from a stored one; an unsatisfiable range is 416 with
// OCI error JSON.
func TestRangeOnFallback(t *testing.T) {
	const size = 2<<20 + 123
	reg := startRegistry(t, localregistry.Options{UploadRate: 4 << 20})
	data := localregistry.RandomBytes(size, 2)
	d := pushBlob(t, reg, testRepo, data)
	o := startOrigin(t, "", nil, upstreamFor(t, reg.URL()))

	check := func(t *testing.T, rng string, from, to int64) {
		t.Helper()
		resp, body := do(t, http.MethodGet, blobURL(o, testRepo, d), http.Header{"Range": {rng}})
		if resp.StatusCode != http.StatusPartialContent {
			t.Fatalf("Range %s: status %d, want 206; body %q", rng, resp.StatusCode, body)
		}
		if !bytes.Equal(body, data[from:to]) {
			t.Fatalf("Range %s: got %d bytes that differ from blob[%d:%d]", rng, len(body), from, to)
		}
		if want := fmt.Sprintf("bytes %d-%d/%d", from, to-1, size); resp.Header.Get("Content-Range") != want {
			t.Fatalf("Range %s: Content-Range %q, want %q", rng, resp.Header.Get("Content-Range"), want)
		}
		if resp.Header.Get("Docker-Content-Digest") != d.String() {
			t.Fatalf("Range %s: Docker-Content-Digest %q", rng, resp.Header.Get("Docker-Content-Digest"))
		}
	}
	// Cold: the range lies in the middle of a blob still arriving at 4 MB/s.
	check(t, "bytes=1048576-1048675", 1<<20, 1<<20+100)
	if _, err := o.Store().Stat(d); err == nil {
		t.Log("blob was already committed when the cold range was answered")
	}
	check(t, "bytes=0-0", 0, 1)
	check(t, "bytes=-10", size-10, size)
	check(t, fmt.Sprintf("bytes=%d-", size-1), size-1, size)
	check(t, "bytes=100-99999999", 100, size)

	for _, rng := range []string{
		fmt.Sprintf("bytes=%d-", size),
		fmt.Sprintf("bytes=%d-%d", size+10, size+20),
		"bytes=5-4",
		"bytes=-0",
		"items=0-1",
	} {
		resp, body := do(t, http.MethodGet, blobURL(o, testRepo, d), http.Header{"Range": {rng}})
		wantError(t, resp, body, http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID")
		if want := "bytes */" + strconv.Itoa(size); resp.Header.Get("Content-Range") != want {
			t.Errorf("Range %s: Content-Range %q, want %q", rng, resp.Header.Get("Content-Range"), want)
		}
		if resp.Header.Get("Docker-Content-Digest") != "" {
			t.Errorf("Range %s: error answer carries Docker-Content-Digest", rng)
		}
	}
	if got := reg.BlobGets(d.String()); got != 1 {
		t.Errorf("registry saw %d blob GETs, want 1", got)
	}
}

// TestHeadDoesNotDownload: HEAD of a cold blob asks upstream for the size
// only; it starts no download.
func TestHeadDoesNotDownload(t *testing.T) {
	reg := startRegistry(t, localregistry.Options{})
	data := localregistry.RandomBytes(1<<20+7, 3)
	d := pushBlob(t, reg, testRepo, data)
	reg.ResetCounts()
	root := t.TempDir()
	o := startOrigin(t, root, nil, upstreamFor(t, reg.URL()))

	resp, body := do(t, http.MethodHead, blobURL(o, testRepo, d), nil)
	if resp.StatusCode != http.StatusOK || len(body) != 0 {
		t.Fatalf("HEAD: status %d, %d body bytes", resp.StatusCode, len(body))
	}
	if resp.ContentLength != int64(len(data)) || resp.Header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("HEAD: Content-Length %d, digest %q", resp.ContentLength, resp.Header.Get("Docker-Content-Digest"))
	}
	if reg.BlobGets(d.String()) != 0 || o.UpstreamGets() != 0 {
		t.Fatalf("HEAD caused a download: registry GETs %d, origin GETs %d", reg.BlobGets(d.String()), o.UpstreamGets())
	}
	if files := storeFiles(t, root, "blobs"); len(files) != 0 {
		t.Fatalf("HEAD stored %v", files)
	}
	// The unknown blob's HEAD is a 404 too.
	resp, _ = do(t, http.MethodHead, blobURL(o, testRepo, digest.FromString("nope")), nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("HEAD of unknown blob: status %d, want 404", resp.StatusCode)
	}
}

// TestMetainfoAndPieceHashesComeWhileTheBlobArrives: the swarm must not wait
// for the upstream transfer. The metainfo is answered as soon as upstream
// has, the piece hashes stream in as the blob arrives, and in the end they
// are the real SHA-1s of the blob's pieces; ?from= resumes a stream.
func TestMetainfoAndPieceHashesComeWhileTheBlobArrives(t *testing.T) {
	const (
		size = 8 << 20
		rate = 4 << 20 // the upstream transfer takes about 2 s
	)
	reg := startRegistry(t, localregistry.Options{UploadRate: rate})
	data := localregistry.RandomBytes(size, 11)
	d := pushBlob(t, reg, testRepo, data)
	o := startOrigin(t, "", nil, upstreamFor(t, reg.URL()))

	start := time.Now()
	resp, meta := do(t, http.MethodGet, metaURL(o, testRepo, d), nil)
	metaAt := time.Since(start)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("metainfo: status %d %q", resp.StatusCode, meta)
	}
	if _, err := o.Store().Stat(d); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("metainfo answered after the blob was in (%s); want it before", metaAt)
	}
	mi, err := p2p.ParseMetaInfo(meta, d)
	if err != nil {
		t.Fatal(err)
	}

	req, _ := http.NewRequest(http.MethodGet, piecesURL(o, testRepo, d), nil)
	presp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer presp.Body.Close()
	if presp.StatusCode != http.StatusOK || presp.Header.Get(p2p.HeaderPieceLength) != strconv.FormatInt(mi.Info.PieceLength, 10) {
		t.Fatalf("pieces: status %d, piece length %q", presp.StatusCode, presp.Header.Get(p2p.HeaderPieceLength))
	}
	first := make([]byte, 20)
	if _, err := io.ReadFull(presp.Body, first); err != nil {
		t.Fatal(err)
	}
	firstAt := time.Since(start)
	_, serr := o.Store().Stat(d)
	rest, err := io.ReadAll(presp.Body)
	if err != nil {
		t.Fatal(err)
	}
	total := time.Since(start)
	if !errors.Is(serr, store.ErrNotFound) || firstAt > total/2 {
		t.Errorf("first piece hash at %s of %s (blob stored then: %v); want it while the blob arrives", firstAt, total, serr == nil)
	}
	want, err := p2p.HashesOf(bytes.NewReader(data), size, mi.Info.PieceLength)
	if err != nil {
		t.Fatal(err)
	}
	if got := append(first, rest...); !bytes.Equal(got, want.Sums()) {
		t.Fatalf("streamed %d bytes of piece hashes, not the blob's %d", len(got), len(want.Sums()))
	}
	t.Logf("metainfo at %s, first piece hash at %s, last at %s", metaAt, firstAt, total)

	// Resuming, and bad resumptions.
	_, tail, err := getPieces(t, piecesURL(o, testRepo, d)+"?from=3")
	if err != nil || !bytes.Equal(tail, want.Sums()[3*20:]) {
		t.Fatalf("?from=3: %d bytes, %v", len(tail), err)
	}
	resp, body := do(t, http.MethodGet, piecesURL(o, testRepo, d)+"?from=99", nil)
	wantError(t, resp, body, http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID")
	resp, body = do(t, http.MethodGet, piecesURL(o, testRepo, d)+"?from=x", nil)
	wantError(t, resp, body, http.StatusBadRequest, "UNSUPPORTED")

	// The sha256 chain the engine's agents check, built in the same pass.
	cresp, chain, err := getPieces(t, piecesURL(o, testRepo, d)+"?hash=sha256-chain")
	wantChain, cerr := p2p.HashListsOf(bytes.NewReader(data), size, mi.Info.PieceLength, p2p.HashChain)
	if err != nil || cerr != nil || cresp.Header.Get(proto.HeaderPieceHash) != "sha256-chain" || !bytes.Equal(chain, wantChain[0].Sums()) {
		t.Fatalf("?hash=sha256-chain: %d bytes, kind %q, %v %v", len(chain), cresp.Header.Get(proto.HeaderPieceHash), err, cerr)
	}
	if _, tail, err := getPieces(t, piecesURL(o, testRepo, d)+"?from=3&hash=sha256-chain"); err != nil || !bytes.Equal(tail, chain[3*32:]) {
		t.Fatalf("?from=3&hash=sha256-chain: %d bytes, %v", len(tail), err)
	}
	if sresp, _, _ := getPieces(t, piecesURL(o, testRepo, d)+"?hash=sha1"); sresp.Header.Get(proto.HeaderPieceHash) != "sha1" {
		t.Errorf("?hash=sha1: kind %q", sresp.Header.Get(proto.HeaderPieceHash))
	}
	resp, body = do(t, http.MethodGet, piecesURL(o, testRepo, d)+"?hash=md5", nil)
	wantError(t, resp, body, http.StatusBadRequest, "UNSUPPORTED")
	if got := reg.BlobGets(d.String()); got != 1 {
		t.Errorf("registry saw %d blob GETs, want 1", got)
	}
}

// The piece-hash stream of a blob still arriving is paced: one write per
// 100 ms at most (origin.hashStreamEvery), however often the upstream copy
// completes pieces (here about 60 times a second), and the last hash comes
// as soon as the blob is verified.
func TestPieceHashStreamIsPaced(t *testing.T) {
	const size = 4 << 20
	s := streamPieceHashes(t, size, 32<<10, 2<<20) // about 2 s; a 32 KiB piece every 16 ms
	// One write a 100 ms, plus the first, the last (at once) and slack
	// for a write read in two.
	if limit := int(s.took/(100*time.Millisecond)) + 4; s.reads > limit {
		t.Errorf("%d reads of the stream in %s (%d pieces); want at most %d", s.reads, s.took, s.pieces, limit)
	}
}

// Where pieces arrive a few a second (slow links), a write of the stream
// waits for 4 new hashes (origin.hashStreamBatch) or for 1 s after the
// oldest came (hashStreamMaxWait; TestStreamWait): not one write a piece.
func TestPieceHashStreamBatchesSlowPieces(t *testing.T) {
	// 16 KiB pieces at 64 KiB/s, 4 a second after the registry's first
	// 64 KiB burst: 16 in 4 s, in 11 reads before the batches (the
	// registry sends 32 KiB at a time).
	s := streamPieceHashes(t, 320<<10, 16<<10, 64<<10)
	if limit := (s.pieces-4)/4 + 4; s.reads > limit {
		t.Errorf("%d reads of the stream in %s (%d pieces); want at most %d", s.reads, s.took, s.pieces, limit)
	}
}

// hashStream is what a client read of a piece-hash stream.
type hashStream struct {
	pieces, reads int
	took          time.Duration
}

// streamPieceHashes pushes a blob of size random bytes to a registry that
// sends rate bytes a second, has an origin cut it into pieceLen pieces, and
// reads the origin's piece-hash stream to the end, checking every hash.
func streamPieceHashes(t *testing.T, size, pieceLen, rate int64) hashStream {
	t.Helper()
	reg := startRegistry(t, localregistry.Options{UploadRate: rate})
	data := localregistry.RandomBytes(size, 12)
	d := pushBlob(t, reg, testRepo, data)
	o := newOriginEdited(t, "", nil, func(c *origin.Config) { c.PieceLength = config.ByteSize(pieceLen) }, upstreamFor(t, reg.URL()))
	serve(t, "origin", o.Run)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, piecesURL(o, testRepo, d), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("pieces: status %d", resp.StatusCode)
	}
	start := time.Now()
	var s hashStream
	var got []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			s.reads++
			got = append(got, buf[:n]...)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	s.took = time.Since(start)
	pl, _ := strconv.ParseInt(resp.Header.Get(p2p.HeaderPieceLength), 10, 64)
	want, err := p2p.HashesOf(bytes.NewReader(data), size, pl)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Sums()) {
		t.Fatalf("streamed %d bytes of piece hashes, not the blob's %d", len(got), len(want.Sums()))
	}
	s.pieces = want.NumPieces()
	t.Logf("%d pieces in %d reads over %s", s.pieces, s.reads, s.took)
	return s
}
