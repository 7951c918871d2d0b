package origin

import (
	"testing"
	"time"
)

// The rule that paces a piece-hash stream while the blob arrives.
func TestStreamWait(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	at := func(n int) time.Time { return t0.Add(ms(n)) }
	for _, c := range []struct {
		name                 string
		now, last, pending   time.Time
		from, sent, known, n int
		want                 time.Duration
	}{
		{"the first write at once", at(0), time.Time{}, at(0), 0, 0, 1, 100, 0},
		{"the first write at once, from a later piece", at(0), time.Time{}, at(0), 40, 40, 41, 100, 0},
		{"a full batch after 100 ms", at(150), at(0), at(120), 0, 10, 14, 100, 0},
		{"a full batch waits for 100 ms since the last write", at(50), at(0), at(40), 0, 10, 20, 100, ms(50)},
		{"one new hash waits for more", at(300), at(0), at(250), 0, 10, 11, 100, ms(950)},
		{"three new hashes wait for a fourth", at(900), at(0), at(250), 0, 10, 13, 100, ms(350)},
		{"a hash waits 1 s at most", at(1250), at(0), at(250), 0, 10, 11, 100, 0},
		{"a hash that waited long goes at once", at(5000), at(0), at(250), 0, 10, 11, 100, 0},
		{"the last hash at once", at(10), at(0), at(5), 0, 10, 100, 100, 0},
		{"the last hash at once, alone", at(10), at(0), at(5), 0, 99, 100, 100, 0},
	} {
		if got := streamWait(c.now, c.last, c.pending, c.from, c.sent, c.known, c.n); got != c.want {
			t.Errorf("%s: waits %s, want %s", c.name, got, c.want)
		}
	}
}
