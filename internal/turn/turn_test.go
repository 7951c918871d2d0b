package turn

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ready reports whether t holds the turn.
func ready(t *Ticket) bool {
	select {
	case <-t.Ready():
		return true
	default:
		return false
	}
}

func fixed(k uint64) func() uint64 { return func() uint64 { return k } }

func TestLowestKeyFirstEqualKeysInOrder(t *testing.T) {
	var g Gate
	first := g.Take(fixed(9))
	if !ready(first) {
		t.Fatal("a free gate made its first ticket wait")
	}
	a, b, c, d := g.Take(fixed(5)), g.Take(fixed(3)), g.Take(fixed(5)), g.Take(fixed(1))
	var got []*Ticket
	for range 4 {
		g.Release()
		for _, tk := range []*Ticket{a, b, c, d} {
			if ready(tk) && !contains(got, tk) {
				got = append(got, tk)
			}
		}
	}
	want := []*Ticket{d, b, a, c}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("turn %d went to the wrong ticket (keys 5, 3, 5, 1 should go 1, 3, 5, 5 first come)", i)
		}
	}
	g.Release()
	if !ready(g.Take(fixed(7))) {
		t.Fatal("the gate stayed busy after the last release")
	}
}

func contains(ts []*Ticket, t *Ticket) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}

func TestKeyIsReadWhenTheTurnIsHanded(t *testing.T) {
	var g Gate
	g.Take(fixed(0))
	var ka, kb atomic.Uint64
	ka.Store(1)
	kb.Store(2)
	a := g.Take(ka.Load)
	b := g.Take(kb.Load)
	ka.Store(3) // a's peer got ahead while it waited
	g.Release()
	if !ready(b) || ready(a) {
		t.Fatal("the turn went by the key at Take, not at hand-over")
	}
}

func TestCancel(t *testing.T) {
	var g Gate
	g.Take(fixed(0))
	a, b := g.Take(fixed(1)), g.Take(fixed(2))
	g.Cancel(a) // gave up while waiting
	if g.Waiting() != 1 {
		t.Fatalf("%d waiting after a cancel, want 1", g.Waiting())
	}
	g.Release()
	if !ready(b) {
		t.Fatal("the turn did not reach the remaining waiter")
	}
	c := g.Take(fixed(3))
	g.Release() // b's turn ends: c holds it now
	if !ready(c) {
		t.Fatal("c did not get the turn")
	}
	d := g.Take(fixed(4))
	g.Cancel(c) // handed the turn, but its writer gave up: d gets it
	if !ready(d) {
		t.Fatal("a cancelled holder kept the turn")
	}
}

// TestOneHolderAtATime runs many writers through the gate under -race:
// never two holders, every writer served.
func TestOneHolderAtATime(t *testing.T) {
	var g Gate
	var holders, served atomic.Int32
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			for j := range 20 {
				tk := g.Take(fixed(uint64((i * j) % 7)))
				if i%5 == 0 && j%3 == 0 {
					select {
					case <-tk.Ready():
					case <-time.After(time.Microsecond):
						g.Cancel(tk)
						continue
					}
				} else {
					<-tk.Ready()
				}
				if holders.Add(1) != 1 {
					t.Error("two holders at once")
				}
				served.Add(1)
				holders.Add(-1)
				g.Release()
			}
		})
	}
	wg.Wait()
	if served.Load() == 0 || g.Waiting() != 0 {
		t.Fatalf("served %d, %d left waiting", served.Load(), g.Waiting())
	}
	if !ready(g.Take(fixed(0))) {
		t.Fatal("the gate was left busy")
	}
}
