package origin_test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/testbed/localregistry"
)

// TestUpstreamErrors: what a client sees for blobs and names the origin
// cannot serve, each as OCI error JSON with the right status.
func TestUpstreamErrors(t *testing.T) {
	reg := startRegistry(t, localregistry.Options{})
	d := pushBlob(t, reg, testRepo, localregistry.RandomBytes(64<<10, 4))
	root := t.TempDir()
	o := startOrigin(t, root, nil, upstreamFor(t, reg.URL()))
	unknown := digest.FromString("not pushed")

	for _, tc := range []struct {
		name   string
		url    string
		status int
		code   string
	}{
		{"unknown blob", blobURL(o, testRepo, unknown), http.StatusNotFound, "BLOB_UNKNOWN"},
		{"unknown blob metainfo", metaURL(o, testRepo, unknown), http.StatusNotFound, "BLOB_UNKNOWN"},
		{"unknown repository", blobURL(o, "test/other", d), http.StatusNotFound, "BLOB_UNKNOWN"},
		{"unconfigured registry", blobURL(o, "quay.io/org/app", d), http.StatusForbidden, "DENIED"},
		{"invalid name", blobURL(o, "Test/Blob", d), http.StatusBadRequest, "NAME_INVALID"},
		{"dot segment name", blobURL(o, "test/../blob", d), http.StatusBadRequest, "NAME_INVALID"},
		{"invalid digest", o.URL() + "/namespace/test%2Fblob/blobs/sha256:1234", http.StatusBadRequest, "DIGEST_INVALID"},
		{"unsupported algorithm", o.URL() + "/namespace/test%2Fblob/blobs/sha512:" + string(bytes.Repeat([]byte("a"), 128)), http.StatusBadRequest, "DIGEST_INVALID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, http.MethodGet, tc.url, nil)
			wantError(t, resp, body, tc.status, tc.code)
		})
	}
	if got := storeFiles(t, root, "blobs"); len(got) != 0 {
		t.Fatalf("failed fetches left %v", got)
	}
}

// TestRegistryDown: an unreachable upstream gives a quick 502 with OCI
// JSON, leaves nothing in the store, and the origin recovers once the
// registry is back.
func TestRegistryDown(t *testing.T) {
	reg := startRegistry(t, localregistry.Options{})
	data := localregistry.RandomBytes(1<<20, 5)
	d := pushBlob(t, reg, testRepo, data)
	root := t.TempDir()
	o := startOrigin(t, root, nil, upstreamFor(t, reg.URL()))
	reg.SetDown(true)

	for _, u := range []string{blobURL(o, testRepo, d), metaURL(o, testRepo, d)} {
		start := time.Now()
		resp, body := do(t, http.MethodGet, u, nil)
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("GET %s took %s with the registry down", u, took)
		}
		wantError(t, resp, body, http.StatusBadGateway, "UNAVAILABLE")
	}
	resp, _ := do(t, http.MethodHead, blobURL(o, testRepo, d), nil)
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("HEAD with the registry down: status %d, want 502", resp.StatusCode)
	}
	for _, dir := range []string{"downloads", "blobs"} {
		if got := storeFiles(t, root, dir); len(got) != 0 {
			t.Errorf("%s/ holds %v after failed fetches", dir, got)
		}
	}

	reg.SetDown(false)
	resp, body := do(t, http.MethodGet, blobURL(o, testRepo, d), nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("after the registry came back: status %d, %d bytes", resp.StatusCode, len(body))
	}
}

// fakeRegistry is a registry that misbehaves in ways a real one cannot be
// made to: it answers every blob GET with body(d) under the Content-Length
// it claims.
func fakeRegistry(t *testing.T, claimed int, body func() []byte) (string, *atomic.Int64) {
	t.Helper()
	var gets atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			w.WriteHeader(http.StatusOK)
			return
		}
		gets.Add(1)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(claimed))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(body())
		}
		// A body shorter than Content-Length makes net/http close the
		// connection: the origin sees an unexpected EOF.
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &gets
}

// TestUpstreamSendsWrongBytes: bytes that do not hash to the digest are
// never committed or served whole, and clients get 502 DIGEST_INVALID. The
// metainfo is answered before any byte is in; the piece hashes stop short
// of the last one, so no peer can complete the wrong blob either.
func TestUpstreamSendsWrongBytes(t *testing.T) {
	const size = 1 << 20
	good := localregistry.RandomBytes(size, 6)
	bad := bytes.Clone(good)
	bad[size-1] ^= 0xff // only the last byte differs
	d := digest.FromBytes(good)
	u, gets := fakeRegistry(t, size, func() []byte { return bad })
	root := t.TempDir()
	o := startOrigin(t, root, nil, upstreamFor(t, u))

	resp, body := do(t, http.MethodGet, metaURL(o, testRepo, d), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("metainfo: status %d %q", resp.StatusCode, body)
	}
	presp, sums, perr := getPieces(t, piecesURL(o, testRepo, d))
	switch {
	case presp.StatusCode == http.StatusBadGateway:
		wantError(t, presp, sums, http.StatusBadGateway, "DIGEST_INVALID")
	case presp.StatusCode != http.StatusOK || perr == nil || len(sums) >= 4*sha1.Size:
		// 256 KiB pieces: the last of the 4 hashes is held back.
		t.Fatalf("pieces: status %d, %d bytes, read error %v; want the stream cut before the last hash", presp.StatusCode, len(sums), perr)
	}
	// A request that finds no fetch in flight starts one, and none fetches
	// twice: the piece-hash stream joins the metainfo's fetch, or starts
	// its own if that one already failed (the upstream is quick here).
	before := gets.Load()
	if before < 1 || before > 2 {
		t.Errorf("the metainfo and piece-hash requests made %d upstream GETs, want 1 or 2", before)
	}

	// A blob client either sees the error or a body cut short: never the
	// whole of the wrong bytes.
	req, _ := http.NewRequest(http.MethodGet, blobURL(o, testRepo, d), nil)
	bresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, rerr := io.ReadAll(bresp.Body)
	bresp.Body.Close()
	switch {
	case bresp.StatusCode == http.StatusBadGateway:
		wantError(t, bresp, got, http.StatusBadGateway, "DIGEST_INVALID")
	case bresp.StatusCode == http.StatusOK && rerr != nil && len(got) < size:
		t.Logf("blob client streamed %d bytes, then the connection was cut: %v", len(got), rerr)
	default:
		t.Fatalf("blob GET: status %d, %d bytes, read error %v", bresp.StatusCode, len(got), rerr)
	}
	if n := gets.Load(); n < before || n > before+1 {
		// The blob GET joins the failed fetch, or starts another one.
		t.Errorf("the blob GET made %d upstream GETs, want 0 or 1", n-before)
	}
	resp, body = do(t, http.MethodGet, metaURL(o, testRepo, d), nil)
	if presp, sums, err := getPieces(t, piecesURL(o, testRepo, d)); presp.StatusCode == http.StatusOK && err == nil {
		t.Fatalf("a later piece-hash stream completed for the wrong bytes (%d bytes)", len(sums))
	}
	if presp, sums, err := getPieces(t, piecesURL(o, testRepo, d)+"?hash=sha256-chain"); presp.StatusCode == http.StatusOK && err == nil {
		t.Fatalf("a sha256 chain completed for the wrong bytes (%d bytes)", len(sums))
	}
	for _, dir := range []string{"downloads", "blobs"} {
		if got := storeFiles(t, root, dir); len(got) != 0 {
			t.Errorf("%s/ holds %v after a digest mismatch", dir, got)
		}
	}
}

// TestUpstreamCutsTransfer: an upstream that stops mid-blob gives 502 and
// leaves nothing behind.
func TestUpstreamCutsTransfer(t *testing.T) {
	const size = 1 << 20
	data := localregistry.RandomBytes(size, 7)
	d := digest.FromBytes(data)
	u, _ := fakeRegistry(t, size, func() []byte { return data[:size/2] })
	root := t.TempDir()
	o := startOrigin(t, root, nil, upstreamFor(t, u))

	presp, sums, perr := getPieces(t, piecesURL(o, testRepo, d))
	switch {
	case presp.StatusCode == http.StatusBadGateway:
		wantError(t, presp, sums, http.StatusBadGateway, "UNAVAILABLE")
	case presp.StatusCode != http.StatusOK || perr == nil || len(sums) > 2*sha1.Size:
		t.Fatalf("pieces: status %d, %d bytes, read error %v; want the stream cut", presp.StatusCode, len(sums), perr)
	}
	// The blob GET starts another fetch, cut short too.
	bresp, got, rerr := getPieces(t, blobURL(o, testRepo, d))
	switch {
	case bresp.StatusCode == http.StatusBadGateway:
		wantError(t, bresp, got, http.StatusBadGateway, "UNAVAILABLE")
	case bresp.StatusCode != http.StatusOK || rerr == nil || len(got) >= size:
		t.Fatalf("blob GET: status %d, %d bytes, read error %v", bresp.StatusCode, len(got), rerr)
	}
	for _, dir := range []string{"downloads", "blobs"} {
		if got := storeFiles(t, root, dir); len(got) != 0 {
			t.Errorf("%s/ holds %v after a cut transfer", dir, got)
		}
	}
}

// TestOriginRestartServesStoredBlob: a new origin on the same root serves
// a blob fetched by its predecessor without asking upstream, reusing the
// metainfo kept beside the blob, or rebuilding it when it is gone; a stored
// blob that no longer matches its digest is fetched again.
func TestOriginRestartServesStoredBlob(t *testing.T) {
	const size = 3<<20 + 5
	reg := startRegistry(t, localregistry.Options{})
	data := localregistry.RandomBytes(size, 8)
	d := pushBlob(t, reg, testRepo, data)
	root := t.TempDir()
	up := upstreamFor(t, reg.URL())

	// First life: fetch the blob, then stop.
	o1 := newOrigin(t, root, nil, up)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o1.Run(ctx) }()
	resp, meta1 := do(t, http.MethodGet, metaURL(o1, testRepo, d), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("first metainfo: status %d %q", resp.StatusCode, meta1)
	}
	// The metainfo comes before the blob: wait for the whole of it.
	if resp, body := do(t, http.MethodGet, blobURL(o1, testRepo, d), nil); resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("first blob GET: status %d, %d bytes", resp.StatusCode, len(body))
	}
	_, sums1, err := getPieces(t, piecesURL(o1, testRepo, d))
	if err != nil || len(sums1) != 4*sha1.Size {
		t.Fatalf("first piece hashes: %d bytes, %v", len(sums1), err)
	}
	_, chain1, err := getPieces(t, piecesURL(o1, testRepo, d)+"?hash=sha256-chain")
	if err != nil || len(chain1) != 4*32 || !bytes.Equal(chain1[3*32:], d2b(t, d)) {
		t.Fatalf("first sha256 chain: %d bytes, %v; want 4 entries, the digest last", len(chain1), err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	chainFile := storedPath(root, d) + ".chain"
	keptChain := func(t *testing.T) {
		t.Helper()
		b, err := os.ReadFile(chainFile)
		if err != nil || len(b) != len(chain1)+sha256.Size || !bytes.Equal(b[:len(chain1)], chain1) {
			t.Fatalf("the chain kept beside the blob: %d bytes, %v; want the chain and its sha256", len(b), err)
		}
	}
	keptChain(t)

	// Second life, registry unreachable: everything comes from the store.
	reg.ResetCounts()
	reg.SetDown(true)
	restart := func(t *testing.T) {
		o := startOrigin(t, root, nil, up)
		resp, meta := do(t, http.MethodGet, metaURL(o, testRepo, d), nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("metainfo after restart: status %d %q", resp.StatusCode, meta)
		}
		if !bytes.Equal(meta, meta1) {
			t.Fatalf("metainfo after restart differs from the first")
		}
		if _, sums, err := getPieces(t, piecesURL(o, testRepo, d)); err != nil || !bytes.Equal(sums, sums1) {
			t.Fatalf("piece hashes after restart differ from the first (%v)", err)
		}
		if _, chain, err := getPieces(t, piecesURL(o, testRepo, d)+"?hash=sha256-chain"); err != nil || !bytes.Equal(chain, chain1) {
			t.Fatalf("sha256 chain after restart differs from the first (%v)", err)
		}
		keptChain(t)
		resp, body := do(t, http.MethodGet, blobURL(o, testRepo, d), nil)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
			t.Fatalf("blob after restart: status %d, %d bytes", resp.StatusCode, len(body))
		}
		if o.UpstreamGets() != 0 || reg.BlobGets(d.String()) != 0 {
			t.Fatalf("restart went upstream: origin %d GETs, registry %d", o.UpstreamGets(), reg.BlobGets(d.String()))
		}
		if !o.Seeding(d) {
			t.Fatal("restarted origin does not seed the stored blob")
		}
	}
	t.Run("metainfo kept", restart)
	t.Run("metainfo rebuilt", func(t *testing.T) {
		if err := os.Remove(storedPath(root, d) + ".torrent"); err != nil {
			t.Fatal(err)
		}
		restart(t)
	})
	// The kept chain is what a restarted origin serves: not hashed again
	// (a list edited here, with its sha256 made to match, comes back as
	// edited), unless it rotted or lacks the digest as its last entry.
	editChain := func(t *testing.T, edit func(b []byte), fixSum bool) {
		t.Helper()
		b, err := os.ReadFile(chainFile)
		if err != nil {
			t.Fatal(err)
		}
		edit(b)
		if fixSum {
			sum := sha256.Sum256(b[:len(b)-sha256.Size])
			copy(b[len(b)-sha256.Size:], sum[:])
		}
		if err := os.WriteFile(chainFile, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("chain read, not hashed again", func(t *testing.T) {
		editChain(t, func(b []byte) { b[0] ^= 1 }, true)
		o := startOrigin(t, root, nil, up)
		_, chain, err := getPieces(t, piecesURL(o, testRepo, d)+"?hash=sha256-chain")
		if err != nil || len(chain) != len(chain1) || chain[0] != chain1[0]^1 || !bytes.Equal(chain[1:], chain1[1:]) {
			t.Fatalf("chain after restart: %d bytes, %v; want the kept one", len(chain), err)
		}
		editChain(t, func(b []byte) { b[0] ^= 1 }, true) // as it was
	})
	t.Run("rotted chain rebuilt", func(t *testing.T) {
		editChain(t, func(b []byte) { b[40] ^= 1 }, false)
		restart(t)
	})
	t.Run("chain without the digest last rebuilt", func(t *testing.T) {
		editChain(t, func(b []byte) { b[3*32] ^= 1 }, true)
		restart(t)
	})
	t.Run("rotted piece hashes rebuilt", func(t *testing.T) {
		p := storedPath(root, d) + ".pieces"
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[0] ^= 1
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		restart(t)
	})

	// Third life: the stored copy rotted on disk. The origin must notice,
	// drop it and fetch the blob again rather than answer 404.
	t.Run("corrupt blob refetched", func(t *testing.T) {
		reg.SetDown(false)
		reg.ResetCounts()
		corrupt(t, root, d)
		o := startOrigin(t, root, nil, up)
		resp, meta := do(t, http.MethodGet, metaURL(o, testRepo, d), nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("metainfo of a corrupt stored blob: status %d %q", resp.StatusCode, meta)
		}
		if !bytes.Equal(meta, meta1) {
			t.Fatal("metainfo after refetch differs from the first")
		}
		if _, sums, err := getPieces(t, piecesURL(o, testRepo, d)); err != nil || !bytes.Equal(sums, sums1) {
			t.Fatalf("piece hashes after refetch differ from the first (%v)", err)
		}
		resp, body := do(t, http.MethodGet, blobURL(o, testRepo, d), nil)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
			t.Fatalf("blob after refetch: status %d, %d bytes", resp.StatusCode, len(body))
		}
		if got := reg.BlobGets(d.String()); got != 1 {
			t.Fatalf("registry saw %d GETs for the refetch, want 1", got)
		}
	})
	t.Run("corrupt blob, blob endpoint first", func(t *testing.T) {
		reg.ResetCounts()
		corrupt(t, root, d)
		o := startOrigin(t, root, nil, up)
		resp, body := do(t, http.MethodGet, blobURL(o, testRepo, d), nil)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
			t.Fatalf("blob of a corrupt stored blob: status %d, %d bytes", resp.StatusCode, len(body))
		}
		if got := reg.BlobGets(d.String()); got != 1 {
			t.Fatalf("registry saw %d GETs for the refetch, want 1", got)
		}
	})
}

// storedPath is where the store under root keeps blob d.
func storedPath(root string, d digest.Digest) string {
	return filepath.Join(root, "blobs", "sha256", d.Encoded()[:2], d.Encoded())
}

// corrupt flips a byte of the stored blob d, as a failing disk would.
func corrupt(t *testing.T, root string, d digest.Digest) {
	t.Helper()
	p := storedPath(root, d)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// d2b is d's sha256 as bytes.
func d2b(t *testing.T, d digest.Digest) []byte {
	t.Helper()
	b, err := hex.DecodeString(d.Encoded())
	if err != nil {
		t.Fatal(err)
	}
	return b
}
