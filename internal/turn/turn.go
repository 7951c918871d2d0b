// Package turn hands a shared resource (a node's upload cap) to one holder
// at a time, the waiter with the lowest key first.
//
// A writer takes a turn, waits for its tokens at the rate limiter, and
// releases the turn: so the next block is chosen only when the cap is free
// for it, among every block waiting then, instead of in the order the
// writers reached the limiter (rate.Limiter reserves first come).
package turn

import "sync"

// Gate hands out turns. The zero value is free.
type Gate struct {
	mu      sync.Mutex
	busy    bool
	waiters []*Ticket
}

// Ticket is a place in a Gate's queue.
type Ticket struct {
	key   func() uint64
	ready chan struct{}
}

// Ready is closed when the ticket holds the turn.
func (t *Ticket) Ready() <-chan struct{} { return t.ready }

// Take queues for the turn. key orders the waiters (lowest first, equal
// keys in the order they came); it is called, under the gate's lock, when
// a turn is handed on, so it may change while the ticket waits, and it
// must not take a lock that is held while calling Take, Release or Cancel.
// If the gate is free, the ticket holds the turn at once.
func (g *Gate) Take(key func() uint64) *Ticket {
	t := &Ticket{key: key, ready: make(chan struct{})}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.busy {
		g.busy = true
		close(t.ready)
		return t
	}
	g.waiters = append(g.waiters, t)
	return t
}

// Release ends the holder's turn and hands it to the waiter with the
// lowest key.
func (g *Gate) Release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.handOnLocked()
}

func (g *Gate) handOnLocked() {
	if len(g.waiters) == 0 {
		g.busy = false
		return
	}
	best, bestKey := 0, g.waiters[0].key()
	for i, w := range g.waiters[1:] {
		if k := w.key(); k < bestKey {
			best, bestKey = i+1, k
		}
	}
	w := g.waiters[best]
	// Delete keeping the order: equal keys go first come.
	g.waiters = append(g.waiters[:best], g.waiters[best+1:]...)
	close(w.ready)
}

// Cancel withdraws t, whose writer gave up waiting (and so never releases
// it). If the turn was handed to t meanwhile, it is passed on.
func (g *Gate) Cancel(t *Ticket) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, w := range g.waiters {
		if w == t {
			g.waiters = append(g.waiters[:i], g.waiters[i+1:]...)
			return
		}
	}
	select {
	case <-t.ready:
		g.handOnLocked()
	default:
	}
}

// Waiting counts the tickets waiting for a turn (for tests and metrics).
func (g *Gate) Waiting() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.waiters)
}
