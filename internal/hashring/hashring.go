// Package hashring places keys on nodes by rendezvous (highest random weight)
// hashing: each key ranks every node by hash(node, key), so adding or
// removing a node moves only the keys that node owned.
package hashring

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
)

// Ring is an immutable set of nodes.
type Ring struct {
	nodes []string
}

// New returns a ring over nodes (duplicates removed).
func New(nodes []string) *Ring {
	ns := slices.Clone(nodes)
	slices.Sort(ns)
	return &Ring{nodes: slices.Compact(ns)}
}

// Nodes returns all nodes in sorted order.
func (r *Ring) Nodes() []string { return slices.Clone(r.nodes) }

// Pick returns up to n nodes for key, best first. n <= 0 means all.
func (r *Ring) Pick(key string, n int) []string {
	type scored struct {
		node  string
		score uint64
	}
	s := make([]scored, len(r.nodes))
	for i, node := range r.nodes {
		s[i] = scored{node, score(node, key)}
	}
	slices.SortFunc(s, func(a, b scored) int {
		switch {
		case a.score > b.score:
			return -1
		case a.score < b.score:
			return 1
		}
		return 0
	})
	if n <= 0 || n > len(s) {
		n = len(s)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = s[i].node
	}
	return out
}

func score(node, key string) uint64 {
	h := sha256.New()
	h.Write([]byte(node))
	h.Write([]byte{0})
	h.Write([]byte(key))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}
