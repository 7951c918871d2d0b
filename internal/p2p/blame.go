package p2p

import (
	"hash/maphash"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/anacrolix/torrent/iplist"
)

// Shoal bans peers that send bad pieces itself, for p2p.ban_time, instead of
// leaving it to anacrolix/torrent, whose bans are private and last for the
// life of the process (a peer with one flipped RAM bit would be shunned by
// every agent until each restarts). The engine hashes pieces itself
// (transfer.check) and fetches a failed piece again; blame decides whom to
// ban, and banList enforces it (the engine's dials and accepts, and the
// library's IP blocklist).

// blame attributes the blocks of unverified pieces to the peers that sent
// them. A failed piece with a single contributor bans it at once; with
// several, the records are kept, and once the piece verifies every peer
// whose block differs from the verified bytes is banned (smart ban).
type blame struct {
	seed maphash.Seed

	mu     sync.Mutex
	blocks map[int][]blockRec // by piece, until it verifies
	failed map[int]bool
}

type blockRec struct {
	from  netip.Addr
	begin int64
	size  int
	sum   uint64
}

func newBlame() *blame {
	return &blame{seed: maphash.MakeSeed(), blocks: map[int][]blockRec{}, failed: map[int]bool{}}
}

// received records a block of piece from peer from.
func (b *blame) received(piece int, begin int64, from netip.Addr, data []byte) {
	sum := maphash.Bytes(b.seed, data)
	b.mu.Lock()
	b.blocks[piece] = append(b.blocks[piece], blockRec{from: from, begin: begin, size: len(data), sum: sum})
	b.mu.Unlock()
}

// hashFailed is called when piece failed its hash; it returns the peer to
// ban if only one sent the piece's blocks.
func (b *blame) hashFailed(piece int) []netip.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	from := map[netip.Addr]bool{}
	for _, r := range b.blocks[piece] {
		from[r.from] = true
	}
	if len(from) == 1 {
		delete(b.blocks, piece)
		for a := range from {
			return []netip.Addr{a}
		}
	}
	b.failed[piece] = true
	return nil
}

// verified is called when piece passed its hash; read gets its verified
// bytes. After an earlier failure, it returns every peer that had sent a
// block differing from them.
func (b *blame) verified(piece int, read func(p []byte, off int64) error) []netip.Addr {
	b.mu.Lock()
	recs, failed := b.blocks[piece], b.failed[piece]
	delete(b.blocks, piece)
	delete(b.failed, piece)
	b.mu.Unlock()
	if !failed {
		return nil
	}
	var bad []netip.Addr
	seen := map[netip.Addr]bool{}
	buf := []byte{}
	for _, r := range recs {
		if seen[r.from] {
			continue
		}
		if cap(buf) < r.size {
			buf = make([]byte, r.size)
		}
		if err := read(buf[:r.size], r.begin); err != nil {
			return bad
		}
		if maphash.Bytes(b.seed, buf[:r.size]) != r.sum {
			seen[r.from] = true
			bad = append(bad, r.from)
		}
	}
	return bad
}

// banList is the node's bans with their expiry, used by the client as its
// IP blocklist: banned peers are neither dialled nor accepted.
type banList struct {
	now func() time.Time

	mu    sync.Mutex
	until map[netip.Addr]time.Time
}

func newBanList() *banList {
	return &banList{now: time.Now, until: map[netip.Addr]time.Time{}}
}

// ban bans a for d; it reports whether a was not banned already.
func (l *banList) ban(a netip.Addr, d time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	fresh := !l.until[a].After(now)
	l.until[a] = now.Add(d)
	return fresh
}

func (l *banList) banned(a netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	until, ok := l.until[a]
	if ok && !until.After(l.now()) {
		delete(l.until, a) // expired
		return false
	}
	return ok
}

// Lookup implements iplist.Ranger.
func (l *banList) Lookup(ip net.IP) (iplist.Range, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok || !l.banned(a.Unmap()) {
		return iplist.Range{}, false
	}
	return iplist.Range{First: ip, Last: ip, Description: "shoal: sent a bad piece"}, true
}

// NumRanges implements iplist.Ranger: the bans still running.
func (l *banList) NumRanges() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, now := 0, l.now()
	for a, until := range l.until {
		if until.After(now) {
			n++
		} else {
			delete(l.until, a)
		}
	}
	return n
}
