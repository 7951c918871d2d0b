package httpx_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/testutil"
)

const bigSize = 64 << 20 // more than loopback's socket buffers hold

// limitsServer serves /file (a 64 MiB file, the sendfile path), /bytes (the
// same from memory, the Write path) and /echo (reads the body).
func limitsServer(t *testing.T, lim httpx.Limits) (url string, data []byte) {
	t.Helper()
	data = make([]byte, bigSize)
	_, _ = rand.Read(data)
	path := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/file", func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(path)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer f.Close()
		http.ServeContent(w, r, "", time.Time{}, f)
	})
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "67108864")
		_, _ = w.Write(data)
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "too big", http.StatusRequestEntityTooLarge)
			return
		}
		_, _ = io.WriteString(w, strings.Repeat("x", int(n%7)))
	})
	srv, err := httpx.Listen("127.0.0.1:0", mux, testutil.Logger(t), lim)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = srv.Serve(ctx) }()
	t.Cleanup(cancel)
	return srv.URL(), data
}

func TestSlowReaderIsCutOffFastReaderIsNot(t *testing.T) {
	// The idle timeout is well above a scheduling stall of a loaded 2-core
	// machine under -race (1s cut a fast reader off there), and the stall
	// below is well above it.
	const idle = 3 * time.Second
	url, data := limitsServer(t, httpx.Limits{WriteIdleTimeout: idle})
	want := sha256.Sum256(data)
	for _, path := range []string{"/file", "/bytes"} {
		t.Run(path, func(t *testing.T) {
			// A fast reader gets the whole body, however long it takes in all
			// (the deadline moves with every chunk). It hashes as it reads:
			// io.ReadAll's growing 64 MiB buffer stalled it past the idle
			// timeout under -race on a slow day (CI, 2026-12-05).
			resp, err := http.Get(url + path)
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			n, err := io.Copy(h, resp.Body)
			resp.Body.Close()
			if err != nil || n != int64(len(data)) || !bytes.Equal(h.Sum(nil), want[:]) {
				t.Fatalf("fast reader: %d bytes, %v", n, err)
			}
			// A reader that takes nothing for longer than write_idle_timeout
			// is cut off: its body ends short.
			resp, err = http.Get(url + path)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * idle)
			n, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil || n >= bigSize {
				t.Fatalf("stalled reader got %d of %d bytes, err %v: want cut off", n, bigSize, err)
			}
			t.Logf("stalled reader cut off after %d bytes: %v", n, err)
		})
	}
}

func TestKeepAliveAfterIdleLongerThanWriteTimeout(t *testing.T) {
	url, _ := limitsServer(t, httpx.Limits{WriteIdleTimeout: 200 * time.Millisecond})
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	for i := range 3 {
		resp, err := c.Post(url+"/echo", "text/plain", strings.NewReader("abc"))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %s", i, resp.Status)
		}
		time.Sleep(500 * time.Millisecond) // the last write deadline has long passed
	}
}

func TestSlowHeadersAreCutOff(t *testing.T) {
	url, _ := limitsServer(t, httpx.Limits{ReadHeaderTimeout: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "GET /echo HTTP/1.1\r\nHost: x\r\n") // and never the blank line
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, err = conn.Read(make([]byte, 1024))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server kept a client that never finished its headers for 5s")
	}
	t.Logf("connection closed after %s: %v", time.Since(start).Round(time.Millisecond), err)
}

func TestHeaderAndBodySizeLimits(t *testing.T) {
	url, _ := limitsServer(t, httpx.Limits{MaxHeaderBytes: 8 << 10, MaxBodyBytes: 4 << 10})
	req, _ := http.NewRequest(http.MethodGet, url+"/echo", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 64<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("64 KiB header with max_header_bytes 8KiB: %s, want 431", resp.Status)
	}
	for size, want := range map[int]int{4 << 10: 200, 4<<10 + 1: 413} {
		resp, err := http.Post(url+"/echo", "text/plain", strings.NewReader(strings.Repeat("b", size)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("body of %d bytes with max_body_bytes 4KiB: %s, want %d", size, resp.Status, want)
		}
	}
	// A chunked body (no Content-Length) is cut at the limit too.
	pr, pw := io.Pipe()
	go func() {
		w := bufio.NewWriter(pw)
		_, _ = w.WriteString(strings.Repeat("c", 1<<20))
		_ = w.Flush()
		pw.Close()
	}()
	resp, err = http.Post(url+"/echo", "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("chunked 1 MiB body: %s, want 413", resp.Status)
	}
}

func TestLimitsValidateNamesTheKey(t *testing.T) {
	for key, lim := range map[string]httpx.Limits{
		"http.read_header_timeout": {ReadHeaderTimeout: time.Millisecond},
		"http.max_header_bytes":    {MaxHeaderBytes: 10},
		"http.max_body_bytes":      {MaxBodyBytes: 2 << 30},
		"http.write_idle_timeout":  {WriteIdleTimeout: -time.Second},
	} {
		lim.ApplyDefaults()
		err := lim.Validate("http")
		if err == nil || !strings.Contains(err.Error(), `"`+key+`"`) {
			t.Errorf("%+v: %v, want an error naming %s", lim, err, key)
		}
	}
}
