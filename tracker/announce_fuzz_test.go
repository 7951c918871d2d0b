package tracker

import (
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzParseAnnounce(f *testing.F) {
	ih := url.QueryEscape(strings.Repeat("\x01", 20))
	id := url.QueryEscape("-SA0001-abcdefghijkl")
	for _, q := range []string{
		"info_hash=" + ih + "&peer_id=" + id + "&port=6881&uploaded=0&downloaded=0&left=10&event=started&compact=1",
		"info_hash=" + ih + "&peer_id=" + id + "&port=0&left=0",
		"info_hash=%zz&port=1",
		"port=70000&left=-1&numwant=abc&ip=1.2.3.4",
		"",
		"&&&=&",
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, q string) {
		req, reason := parseAnnounce(q)
		if reason != "" {
			if !utf8.ValidString(reason) {
				t.Fatalf("failure reason is not UTF-8: %q", reason)
			}
			return
		}
		// Whatever is accepted is a well-formed announce.
		if req.port == 0 || req.left < 0 {
			t.Fatalf("accepted %q as port %d, left %d", q, req.port, req.left)
		}
		switch req.event {
		case "", "started", "completed", "stopped":
		default:
			t.Fatalf("accepted event %q", req.event)
		}
	})
}
