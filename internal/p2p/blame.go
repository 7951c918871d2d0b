package p2p

import (
	"hash/maphash"
	"net"
	"net/netip"
	"slices"
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
// them, attempt by attempt. A failed attempt with a single contributor bans
// it at once. With several, one of them is named a suspect: the node holds
// it off for a moment (suspendTime), so the next attempt comes from the
// others, and either fails with fewer contributors or verifies. Once the
// piece verifies, every peer whose block, in any attempt, differs from the
// verified bytes is banned (smart ban). Without the suspect, a liar that
// always contributes a block to every attempt would never be alone, and the
// piece would never verify: the pull would loop.
type blame struct {
	seed maphash.Seed

	mu     sync.Mutex
	pieces map[int]*pieceBlame // until the piece verifies
}

type pieceBlame struct {
	recs      []blockRec
	attempt   int
	failed    bool
	suspected map[netip.Addr]bool // this piece's suspects so far
}

type blockRec struct {
	from    netip.Addr
	attempt int
	begin   int64
	size    int
	sum     uint64
}

func newBlame() *blame {
	return &blame{seed: maphash.MakeSeed(), pieces: map[int]*pieceBlame{}}
}

func (b *blame) pieceLocked(piece int) *pieceBlame {
	p := b.pieces[piece]
	if p == nil {
		p = &pieceBlame{}
		b.pieces[piece] = p
	}
	return p
}

// received records a block of piece from peer from.
func (b *blame) received(piece int, begin int64, from netip.Addr, data []byte) {
	sum := maphash.Bytes(b.seed, data)
	b.mu.Lock()
	p := b.pieceLocked(piece)
	p.recs = append(p.recs, blockRec{from: from, attempt: p.attempt, begin: begin, size: len(data), sum: sum})
	b.mu.Unlock()
}

// hashFailed is called when piece failed its hash. If one peer sent every
// block of this attempt, it is returned in ban. Otherwise suspect is the
// contributor that sent the most blocks and was not suspected for this
// piece yet; there is none if no peer contributed, or if a contributor is
// kept off already (blocked, which may be nil): the next attempt comes
// without it anyway.
func (b *blame) hashFailed(piece int, blocked func(netip.Addr) bool) (ban []netip.Addr, suspect netip.Addr) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.pieceLocked(piece)
	blocks := map[netip.Addr]int{}
	for _, r := range p.recs {
		if r.attempt == p.attempt {
			blocks[r.from]++
		}
	}
	if len(blocks) == 1 {
		// Banned at once: its blocks need no comparing later.
		p.recs = slices.DeleteFunc(p.recs, func(r blockRec) bool { return r.attempt == p.attempt })
		p.attempt++
		for a := range blocks {
			return []netip.Addr{a}, netip.Addr{}
		}
	}
	p.attempt++
	p.failed = true
	for a := range blocks {
		if blocked != nil && blocked(a) {
			return nil, netip.Addr{}
		}
	}
	if p.suspected == nil {
		p.suspected = map[netip.Addr]bool{}
	}
	for round := 0; round < 2 && !suspect.IsValid(); round++ {
		most := 0
		for a, n := range blocks {
			if !p.suspected[a] && (n > most || n == most && a.Less(suspect)) {
				suspect, most = a, n
			}
		}
		if !suspect.IsValid() {
			clear(p.suspected) // every contributor had its turn: start over
		}
	}
	if suspect.IsValid() {
		p.suspected[suspect] = true
	}
	return nil, suspect
}

// verified is called when piece passed its hash; read gets its verified
// bytes. After an earlier failure, it returns every peer that had sent a
// block differing from them.
func (b *blame) verified(piece int, read func(p []byte, off int64) error) []netip.Addr {
	b.mu.Lock()
	p := b.pieces[piece]
	delete(b.pieces, piece)
	b.mu.Unlock()
	if p == nil || !p.failed {
		return nil
	}
	var bad []netip.Addr
	seen := map[netip.Addr]bool{}
	buf := []byte{}
	for _, r := range p.recs {
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
	held  map[netip.Addr]time.Time // suspects: kept off, not banned
}

func newBanList() *banList {
	return &banList{now: time.Now, until: map[netip.Addr]time.Time{}, held: map[netip.Addr]time.Time{}}
}

// hold keeps a off for d without banning it: a suspect (see blame).
func (l *banList) hold(a netip.Addr, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held[a] = l.now().Add(d)
}

// blocked reports whether a is banned or held now: neither dialled nor
// accepted.
func (l *banList) blocked(a netip.Addr) bool {
	if l.banned(a) {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	until, ok := l.held[a]
	if ok && !until.After(l.now()) {
		delete(l.held, a)
		return false
	}
	return ok
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
	if !ok || !l.blocked(a.Unmap()) {
		return iplist.Range{}, false
	}
	return iplist.Range{First: ip, Last: ip, Description: "shoal: sent a bad piece, or suspected of it"}, true
}

// NumRanges implements iplist.Ranger: the bans and holds still running.
func (l *banList) NumRanges() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return running(l.until, l.now()) + running(l.held, l.now())
}

// numBans is the bans still running.
func (l *banList) numBans() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return running(l.until, l.now())
}

// running counts the entries of m that run past now and drops the rest.
func running(m map[netip.Addr]time.Time, now time.Time) int {
	n := 0
	for a, until := range m {
		if until.After(now) {
			n++
		} else {
			delete(m, a)
		}
	}
	return n
}
