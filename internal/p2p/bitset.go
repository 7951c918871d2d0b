package p2p

import "math/bits"

// bitset is a fixed-size set of piece indexes.
type bitset []uint64

func newBitset(n int) bitset { return make(bitset, (n+63)/64) }

func (b bitset) get(i int) bool { return b[i>>6]&(1<<(uint(i)&63)) != 0 }
func (b bitset) set(i int)      { b[i>>6] |= 1 << (uint(i) & 63) }
func (b bitset) clear(i int)    { b[i>>6] &^= 1 << (uint(i) & 63) }

// anyNotIn reports whether b holds an index that o does not.
func (b bitset) anyNotIn(o bitset) bool {
	for k, w := range b {
		if w&^o[k] != 0 {
			return true
		}
	}
	return false
}

// count is the number of indexes held.
func (b bitset) count() int {
	n := 0
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}

// countNotIn counts b's indexes that o does not hold, stopping at limit.
func (b bitset) countNotIn(o bitset, limit int) int {
	n := 0
	for k, w := range b {
		if n += bits.OnesCount64(w &^ o[k]); n >= limit {
			return n
		}
	}
	return n
}
