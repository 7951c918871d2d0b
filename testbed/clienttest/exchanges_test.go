package clienttest

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
)

// exchange is one request a recording proxy passed on, and how it ended.
type exchange struct {
	method, path, rng string
	status            int    // the answer's status; 0: no answer came
	length            int64  // its Content-Length; -1: not given
	read              int64  // body bytes the proxy read from the server
	errBody           []byte // the start of an error answer's body
	readErr           error  // why reading the answer's body stopped early
	clientGone        bool   // the client had gone when readErr happened
	end               string
}

// Ways an exchange ends (exchange.end; "cut short: ..." and "no answer: ..."
// carry the error).
const (
	endWhole        = "whole"
	endClientClosed = "client closed"
	endGaveUp       = "client gave up before the answer"
	endCutShort     = "cut short"
	endNoAnswer     = "no answer"
)

// exchanges records what passed through a recording proxy.
type exchanges struct {
	mu   sync.Mutex
	list []*exchange
}

type exchangeKey struct{}

// recordingProxy serves a reverse proxy to target that records every
// exchange: the request's Range, the answer's status and length, how many
// body bytes the proxy read from the server (it may read ahead of the
// client), and whether the body ended whole, because the client closed the
// connection, or because the server cut it short.
func recordingProxy(t *testing.T, target string) (*httptest.Server, *exchanges) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	x := &exchanges{}
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	rp := &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(u) },
		Transport:     tr,
		FlushInterval: -1,
		ErrorLog:      log.New(io.Discard, "", 0),
		ModifyResponse: func(resp *http.Response) error {
			e := resp.Request.Context().Value(exchangeKey{}).(*exchange)
			x.mu.Lock()
			e.status, e.length = resp.StatusCode, resp.ContentLength
			x.mu.Unlock()
			resp.Body = &countingBody{ReadCloser: resp.Body, x: x, e: e, client: resp.Request.Context()}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			e := r.Context().Value(exchangeKey{}).(*exchange)
			x.mu.Lock()
			e.end = endNoAnswer + ": " + err.Error()
			if r.Context().Err() != nil {
				e.end = endGaveUp
			}
			x.mu.Unlock()
			http.Error(w, "recording proxy: "+err.Error(), http.StatusBadGateway)
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := &exchange{method: r.Method, path: r.URL.Path, rng: r.Header.Get("Range"), length: -1}
		x.mu.Lock()
		x.list = append(x.list, e)
		x.mu.Unlock()
		// ReverseProxy aborts the handler with a panic when the body
		// breaks off: settle the outcome on the way out either way.
		defer x.settle(e)
		rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), exchangeKey{}, e)))
	}))
	t.Cleanup(func() { srv.Close(); tr.CloseIdleConnections() })
	return srv, x
}

func (x *exchanges) settle(e *exchange) {
	x.mu.Lock()
	defer x.mu.Unlock()
	switch {
	case e.end != "": // the error handler's
	case e.method == http.MethodHead || e.readErr == nil && e.length >= 0 && e.read == e.length:
		e.end = endWhole
	case e.readErr != nil && !e.clientGone:
		e.end = fmt.Sprintf("%s: %v after %d of %d bytes", endCutShort, e.readErr, e.read, e.length)
	default: // the read broke because the client left, or writing to it failed
		e.end = endClientClosed
	}
}

// countingBody counts what the proxy reads of an answer's body and notes
// why the reading stopped.
type countingBody struct {
	io.ReadCloser
	x      *exchanges
	e      *exchange
	client context.Context // the proxied request's: done when the client left
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.x.mu.Lock()
	b.e.read += int64(n)
	if b.e.status >= 400 && len(b.e.errBody) < 200 {
		b.e.errBody = append(b.e.errBody, p[:min(n, 200-len(b.e.errBody))]...)
	}
	if err != nil && err != io.EOF && b.e.readErr == nil {
		b.e.readErr, b.e.clientGone = err, b.client.Err() != nil
	}
	b.x.mu.Unlock()
	return n, err
}

// exchangeStats sums up the exchanges of a pull.
type exchangeStats struct {
	requests, ranged, serverErrors, cutShort, clientClosed, gaveUp, noAnswer int
	byStatus                                                                 map[int]int
}

func (s exchangeStats) String() string {
	codes := make([]int, 0, len(s.byStatus))
	for c := range s.byStatus {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	var st []string
	for _, c := range codes {
		st = append(st, fmt.Sprintf("%d x%d", c, s.byStatus[c]))
	}
	return fmt.Sprintf("%d requests (%d ranged); statuses: %s; %d 5xx; bodies: %d cut short by the server, %d closed by the client; "+
		"%d given up by the client before any answer, %d unanswered (server unreachable)",
		s.requests, s.ranged, strings.Join(st, ", "), s.serverErrors, s.cutShort, s.clientClosed, s.gaveUp, s.noAnswer)
}

// stats sums up the exchanges whose path contains part ("" for all).
func (x *exchanges) stats(part string) exchangeStats {
	x.mu.Lock()
	defer x.mu.Unlock()
	s := exchangeStats{byStatus: map[int]int{}}
	for _, e := range x.list {
		if !strings.Contains(e.path, part) {
			continue
		}
		s.requests++
		if e.rng != "" {
			s.ranged++
		}
		if e.status != 0 {
			s.byStatus[e.status]++
		}
		if e.status >= 500 {
			s.serverErrors++
		}
		switch {
		case strings.HasPrefix(e.end, endCutShort):
			s.cutShort++
		case e.end == endGaveUp:
			s.gaveUp++
		case strings.HasPrefix(e.end, endClientClosed):
			s.clientClosed++
		case strings.HasPrefix(e.end, endNoAnswer):
			s.noAnswer++
		}
	}
	return s
}

// lines lists the exchanges, one a line, digests shortened to 12 hex digits.
func (x *exchanges) lines() string {
	x.mu.Lock()
	defer x.mu.Unlock()
	var b strings.Builder
	for i, e := range x.list {
		p := e.path
		if i := strings.Index(p, "sha256:"); i >= 0 && len(p) >= i+7+12 {
			p = p[:i+7+12]
		}
		rng := ""
		if e.rng != "" {
			rng = " [" + e.rng + "]"
		}
		body := ""
		if len(e.errBody) > 0 {
			body = fmt.Sprintf(" %q", strings.TrimSpace(string(e.errBody)))
		}
		fmt.Fprintf(&b, "%3d %-4s %s%s -> %d, %d of %d bytes read, %s%s\n", i, e.method, p, rng, e.status, e.read, e.length, e.end, body)
	}
	return b.String()
}
