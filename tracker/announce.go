package tracker

import (
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/shoal-dev/shoal/tracker/peerstore"
)

// announceRequest is a parsed BEP 3 announce.
type announceRequest struct {
	infoHash [20]byte
	peerID   [20]byte
	port     uint16
	left     int64
	event    string
	numWant  int // -1: not given
	compact  bool
	noPeerID bool
	ip       netip.Addr // from the ip/ipv4 parameter, if any
}

// rawAnnounce holds the first value of each parameter we read, still escaped.
type rawAnnounce struct {
	infoHash, peerID, port, uploaded, downloaded, left string
	event, numWant, compact, noPeerID, ip, ipv4        string
	has                                                uint16 // bit per field, see the has* constants
}

const (
	hasInfoHash = 1 << iota
	hasPeerID
	hasPort
	hasUploaded
	hasDownloaded
	hasLeft
	hasEvent
	hasNumWant
	hasCompact
	hasNoPeerID
	hasIP
	hasIPv4
)

// splitQuery walks the raw query once, without building a url.Values map:
// announces are the tracker's hot path.
func splitQuery(q string) rawAnnounce {
	var ra rawAnnounce
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(kv, "=")
		var dst *string
		var bit uint16
		switch k {
		case "info_hash":
			dst, bit = &ra.infoHash, hasInfoHash
		case "peer_id":
			dst, bit = &ra.peerID, hasPeerID
		case "port":
			dst, bit = &ra.port, hasPort
		case "uploaded":
			dst, bit = &ra.uploaded, hasUploaded
		case "downloaded":
			dst, bit = &ra.downloaded, hasDownloaded
		case "left":
			dst, bit = &ra.left, hasLeft
		case "event":
			dst, bit = &ra.event, hasEvent
		case "numwant":
			dst, bit = &ra.numWant, hasNumWant
		case "compact":
			dst, bit = &ra.compact, hasCompact
		case "no_peer_id":
			dst, bit = &ra.noPeerID, hasNoPeerID
		case "ip":
			dst, bit = &ra.ip, hasIP
		case "ipv4":
			dst, bit = &ra.ipv4, hasIPv4
		default:
			continue
		}
		if ra.has&bit == 0 { // the first value wins
			*dst, ra.has = v, ra.has|bit
		}
	}
	return ra
}

// parseAnnounce validates an announce query. On failure it returns the
// failure reason for the client, naming the bad parameter.
func parseAnnounce(rawQuery string) (announceRequest, string) {
	ra := splitQuery(rawQuery)
	req := announceRequest{numWant: -1}
	var reason string
	if reason = parseID("info_hash", ra.infoHash, ra.has&hasInfoHash != 0, &req.infoHash); reason != "" {
		return req, reason
	}
	if reason = parseID("peer_id", ra.peerID, ra.has&hasPeerID != 0, &req.peerID); reason != "" {
		return req, reason
	}
	if ra.has&hasPort == 0 {
		return req, "missing port"
	}
	port, err := strconv.ParseUint(ra.port, 10, 16)
	if err != nil || port == 0 {
		return req, "invalid port: want 1..65535, got " + quote(ra.port)
	}
	req.port = uint16(port)
	if reason = parseCount("uploaded", ra.uploaded, ra.has&hasUploaded != 0, nil); reason != "" {
		return req, reason
	}
	if reason = parseCount("downloaded", ra.downloaded, ra.has&hasDownloaded != 0, nil); reason != "" {
		return req, reason
	}
	if ra.has&hasLeft == 0 {
		return req, "missing left"
	}
	if reason = parseCount("left", ra.left, true, &req.left); reason != "" {
		return req, reason
	}
	switch ra.event {
	case "", "started", "completed", "stopped":
		req.event = ra.event
	default:
		return req, "invalid event: want started, completed, stopped or empty, got " + quote(ra.event)
	}
	if ra.has&hasNumWant != 0 {
		n, err := strconv.Atoi(ra.numWant)
		if err != nil {
			return req, "invalid numwant: want an integer, got " + quote(ra.numWant)
		}
		if n >= 0 {
			req.numWant = n
		}
	}
	req.compact = ra.compact == "1"
	req.noPeerID = ra.noPeerID == "1"
	for _, s := range []struct {
		name, v string
		bit     uint16
	}{{"ipv4", ra.ipv4, hasIPv4}, {"ip", ra.ip, hasIP}} {
		if ra.has&s.bit == 0 || req.ip.IsValid() {
			continue
		}
		v, err := url.QueryUnescape(s.v)
		ip, perr := netip.ParseAddr(v)
		if err != nil || perr != nil {
			return req, "invalid " + s.name + ": want an IP address, got " + quote(s.v)
		}
		req.ip = ip.Unmap()
	}
	return req, ""
}

func parseID(name, raw string, present bool, dst *[20]byte) string {
	if !present {
		return "missing " + name
	}
	v, err := url.QueryUnescape(raw)
	if err != nil {
		return "invalid " + name + ": bad percent-encoding"
	}
	if len(v) != 20 {
		return "invalid " + name + ": want 20 bytes, got " + strconv.Itoa(len(v))
	}
	copy(dst[:], v)
	return ""
}

func parseCount(name, raw string, present bool, dst *int64) string {
	if !present {
		return ""
	}
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || n < 0 {
		return "invalid " + name + ": want a non-negative integer, got " + quote(raw)
	}
	if dst != nil {
		*dst = n
	}
	return ""
}

// quote shows a client's value in a failure reason, shortened.
func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strconv.Quote(s)
}

// remoteAddr is the address the request came from, 4in6 unmapped.
func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// Bencoding by hand: the response has a fixed shape, and the reflection
// encoder would dominate the cost of an announce.

func appendString(b []byte, s string) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, ':')
	return append(b, s...)
}

func appendBytes(b, s []byte) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, ':')
	return append(b, s...)
}

func appendInt(b []byte, n int64) []byte {
	b = append(b, 'i')
	b = strconv.AppendInt(b, n, 10)
	return append(b, 'e')
}

func failureBody(reason string) []byte {
	b := make([]byte, 0, 32+len(reason))
	b = append(b, 'd')
	b = appendString(b, "failure reason")
	b = appendString(b, reason)
	return append(b, 'e')
}

// announceBody encodes a successful response: compact peers (BEP 23, with
// IPv6 peers in peers6 per BEP 7) or the BEP 3 list of dictionaries.
func announceBody(interval, complete, incomplete int, peers []peerstore.Peer, compact, noPeerID bool) []byte {
	b := make([]byte, 0, 96+len(peers)*64)
	b = append(b, 'd')
	b = appendString(b, "complete")
	b = appendInt(b, int64(complete))
	b = appendString(b, "incomplete")
	b = appendInt(b, int64(incomplete))
	b = appendString(b, "interval")
	b = appendInt(b, int64(interval))
	b = appendString(b, "min interval")
	b = appendInt(b, int64(max(1, interval/2)))
	b = appendString(b, "peers")
	if compact {
		b = appendCompact(b, peers, true)
		if n6 := len(peers) - countV4(peers); n6 > 0 {
			b = appendString(b, "peers6")
			b = appendCompact(b, peers, false)
		}
	} else {
		b = append(b, 'l')
		for _, p := range peers {
			b = append(b, 'd')
			b = appendString(b, "ip")
			b = appendString(b, p.IP.String())
			if !noPeerID {
				b = appendString(b, "peer id")
				b = appendBytes(b, p.ID[:])
			}
			b = appendString(b, "port")
			b = appendInt(b, int64(p.Port))
			b = append(b, 'e')
		}
		b = append(b, 'e')
	}
	return append(b, 'e')
}

func countV4(peers []peerstore.Peer) int {
	n := 0
	for _, p := range peers {
		if p.IP.Is4() {
			n++
		}
	}
	return n
}

// appendCompact writes the v4 (6 bytes each) or v6 (18 bytes each) peers as
// one bencoded string.
func appendCompact(b []byte, peers []peerstore.Peer, v4 bool) []byte {
	size := 18
	if v4 {
		size = 6
	}
	n := countV4(peers)
	if !v4 {
		n = len(peers) - n
	}
	b = strconv.AppendInt(b, int64(n*size), 10)
	b = append(b, ':')
	for _, p := range peers {
		if p.IP.Is4() != v4 {
			continue
		}
		if v4 {
			a := p.IP.As4()
			b = append(b, a[:]...)
		} else {
			a := p.IP.As16()
			b = append(b, a[:]...)
		}
		b = append(b, byte(p.Port>>8), byte(p.Port))
	}
	return b
}
