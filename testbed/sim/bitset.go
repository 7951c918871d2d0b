package sim

import "math/bits"

// bitset holds one bit per piece.
type bitset []uint64

func newBitset(n int) bitset { return make(bitset, (n+63)/64) }

func (b bitset) has(i int) bool { return b[i>>6]&(1<<(i&63)) != 0 }
func (b bitset) set(i int)      { b[i>>6] |= 1 << (i & 63) }
func (b bitset) clear(i int)    { b[i>>6] &^= 1 << (i & 63) }

// each calls f for every i set in a &^ b &^ c, in order, until f returns false.
func each(a, b, c bitset, f func(i int) bool) {
	for w := range a {
		x := a[w] &^ b[w] &^ c[w]
		for x != 0 {
			i := w*64 + bits.TrailingZeros64(x)
			if !f(i) {
				return
			}
			x &= x - 1
		}
	}
}

// eachSet calls f for every i set in a.
func eachSet(a bitset, f func(i int)) {
	for w := range a {
		x := a[w]
		for x != 0 {
			f(w*64 + bits.TrailingZeros64(x))
			x &= x - 1
		}
	}
}

// anyNotIn reports whether a has a bit b lacks.
func anyNotIn(a, b bitset) bool {
	for w := range a {
		if a[w]&^b[w] != 0 {
			return true
		}
	}
	return false
}

// moreNotIn reports whether a has more than k bits b lacks.
func moreNotIn(a, b bitset, k int) bool {
	n := 0
	for w := range a {
		if n += bits.OnesCount64(a[w] &^ b[w]); n > k {
			return true
		}
	}
	return false
}
