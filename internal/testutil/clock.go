package testutil

import (
	"sync"
	"time"
)

// Clock is a manual clock for tests of TTLs and timeouts, safe for
// concurrent use: pass its Now where production code takes a
// func() time.Time (WithClock options, a store's now).
type Clock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

// NewClock returns a clock standing at start.
func NewClock(start time.Time) *Clock { return &Clock{t: start} }

// NewTickingClock returns a clock at start that moves step forward on
// every reading, so that every reading is later than the one before.
func NewTickingClock(start time.Time, step time.Duration) *Clock {
	return &Clock{t: start, step: step}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(c.step)
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
