package peerstore

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// shardCount spreads swarms over independently locked shards; info-hashes
// are SHA-1 sums, so their first byte is uniform.
const shardCount = 64

// Memory is an in-process Store. Each swarm keeps its peers in a list
// ordered by expiry (the TTL is the same for all, so a refresh moves a peer
// to the back), which makes dropping expired peers cost only what it drops.
// Swarms nobody asks about any more are swept by whichever call next takes
// their shard's lock after a TTL has passed, so memory stays bounded without
// a background goroutine. The clock is assumed not to run backwards.
type Memory struct {
	ttl    int64 // nanoseconds
	now    func() time.Time
	shards [shardCount]shard
}

type shard struct {
	mu        sync.Mutex
	swarms    map[[20]byte]*swarm
	nextSweep int64
}

type swarm struct {
	peers      map[[20]byte]*entry
	head, tail *entry      // expiry order, soonest first
	groups     [2][]*entry // [0] incomplete, [1] complete; entry.idx is the position
}

type entry struct {
	peer       Peer
	expires    int64
	idx        int
	prev, next *entry
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty store whose entries live for ttl after their
// last announce. now is the clock (nil means time.Now).
func NewMemory(ttl time.Duration, now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	if ttl <= 0 {
		ttl = time.Minute
	}
	m := &Memory{ttl: int64(ttl), now: now}
	for i := range m.shards {
		m.shards[i].swarms = make(map[[20]byte]*swarm)
	}
	return m
}

// lock takes the shard of infoHash, sweeping it first when a TTL has passed
// since its last sweep. The caller unlocks.
func (m *Memory) lock(infoHash [20]byte) (*shard, int64) {
	now := m.now().UnixNano()
	sh := &m.shards[int(infoHash[0])%shardCount]
	sh.mu.Lock()
	if now >= sh.nextSweep {
		for ih, sw := range sh.swarms {
			if sw.expire(now) == 0 {
				delete(sh.swarms, ih)
			}
		}
		sh.nextSweep = now + m.ttl
	}
	return sh, now
}

// Announce implements Store.
func (m *Memory) Announce(_ context.Context, infoHash [20]byte, p Peer) error {
	sh, now := m.lock(infoHash)
	defer sh.mu.Unlock()
	sw := sh.swarms[infoHash]
	if sw == nil {
		sw = &swarm{peers: make(map[[20]byte]*entry)}
		sh.swarms[infoHash] = sw
	}
	sw.expire(now)
	e := sw.peers[p.ID]
	if e == nil {
		e = &entry{peer: p}
		sw.peers[p.ID] = e
		sw.addGroup(e)
	} else {
		sw.unlink(e)
		if e.peer.Complete != p.Complete {
			sw.removeGroup(e)
			e.peer = p
			sw.addGroup(e)
		} else {
			e.peer = p
		}
	}
	e.expires = now + m.ttl
	sw.pushBack(e)
	return nil
}

// Remove implements Store.
func (m *Memory) Remove(_ context.Context, infoHash [20]byte, id [20]byte) error {
	sh, _ := m.lock(infoHash)
	defer sh.mu.Unlock()
	sw := sh.swarms[infoHash]
	if sw == nil {
		return nil
	}
	if e := sw.peers[id]; e != nil {
		sw.drop(e)
	}
	if len(sw.peers) == 0 {
		delete(sh.swarms, infoHash)
	}
	return nil
}

// Peers implements Store.
func (m *Memory) Peers(_ context.Context, infoHash [20]byte, n int) ([]Peer, error) {
	sh, now := m.lock(infoHash)
	defer sh.mu.Unlock()
	sw := sh.swarms[infoHash]
	if sw == nil || n <= 0 {
		return nil, nil
	}
	if sw.expire(now) == 0 {
		delete(sh.swarms, infoHash)
		return nil, nil
	}
	out := make([]Peer, 0, min(n, len(sw.peers)))
	out = sw.sample(out, 1, n)
	out = sw.sample(out, 0, n)
	return out, nil
}

// Counts implements Store.
func (m *Memory) Counts(_ context.Context, infoHash [20]byte) (complete, incomplete int, err error) {
	sh, now := m.lock(infoHash)
	defer sh.mu.Unlock()
	sw := sh.swarms[infoHash]
	if sw == nil {
		return 0, 0, nil
	}
	if sw.expire(now) == 0 {
		delete(sh.swarms, infoHash)
		return 0, 0, nil
	}
	return len(sw.groups[1]), len(sw.groups[0]), nil
}

// Len returns the number of peers held, live or not yet swept (for metrics).
func (m *Memory) Len() int {
	total := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		for _, sw := range sh.swarms {
			total += len(sw.peers)
		}
		sh.mu.Unlock()
	}
	return total
}

// expire drops the peers whose TTL has run out and returns how many remain.
func (sw *swarm) expire(now int64) int {
	for sw.head != nil && sw.head.expires <= now {
		sw.drop(sw.head)
	}
	return len(sw.peers)
}

// sample appends to out a uniform random sample of group g, until out holds
// n peers. It runs a partial Fisher-Yates shuffle on the group in place: the
// order inside a group carries no meaning, only entry.idx must follow.
func (sw *swarm) sample(out []Peer, g, n int) []Peer {
	s := sw.groups[g]
	want := min(n-len(out), len(s))
	for i := 0; i < want; i++ {
		j := i + rand.IntN(len(s)-i)
		s[i], s[j] = s[j], s[i]
		s[i].idx, s[j].idx = i, j
		out = append(out, s[i].peer)
	}
	return out
}

func (sw *swarm) drop(e *entry) {
	sw.unlink(e)
	sw.removeGroup(e)
	delete(sw.peers, e.peer.ID)
}

func group(e *entry) int {
	if e.peer.Complete {
		return 1
	}
	return 0
}

func (sw *swarm) addGroup(e *entry) {
	g := group(e)
	e.idx = len(sw.groups[g])
	sw.groups[g] = append(sw.groups[g], e)
}

// removeGroup swaps e with the group's last entry and truncates.
func (sw *swarm) removeGroup(e *entry) {
	g := group(e)
	s := sw.groups[g]
	last := s[len(s)-1]
	s[e.idx], last.idx = last, e.idx
	s[len(s)-1] = nil
	sw.groups[g] = s[:len(s)-1]
}

func (sw *swarm) pushBack(e *entry) {
	e.prev, e.next = sw.tail, nil
	if sw.tail != nil {
		sw.tail.next = e
	} else {
		sw.head = e
	}
	sw.tail = e
}

func (sw *swarm) unlink(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		sw.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		sw.tail = e.prev
	}
	e.prev, e.next = nil, nil
}
