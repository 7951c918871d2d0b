// Package peerstore keeps the tracker's peer graph: which peers hold (or are
// fetching) which info-hash, each entry living until its TTL runs out unless
// the peer announces again. Store is the seam; Memory is the default
// implementation, a Redis one can be shared by tracker replicas.
package peerstore

import (
	"context"
	"net/netip"
)

// Peer is one member of a swarm as the tracker sees it.
type Peer struct {
	ID       [20]byte
	IP       netip.Addr
	Port     uint16
	Complete bool // the peer holds the whole blob (a seeder)
}

// Store is the peer graph. Implementations are safe for concurrent use and
// never return a peer whose TTL has run out.
type Store interface {
	// Announce records or refreshes p for infoHash until now+ttl.
	Announce(ctx context.Context, infoHash [20]byte, p Peer) error
	// Remove drops a peer (event=stopped). Removing an unknown peer is not an error.
	Remove(ctx context.Context, infoHash [20]byte, id [20]byte) error
	// Peers returns up to n live peers: completed ones first, each group a random sample.
	Peers(ctx context.Context, infoHash [20]byte, n int) ([]Peer, error)
	// Counts returns (complete, incomplete) live peers.
	Counts(ctx context.Context, infoHash [20]byte) (complete, incomplete int, err error)
}

// Announcer is a Store that records an announce and answers it (a sample
// of the swarm and its counts) in one step: one round trip for a store
// behind the network.
type Announcer interface {
	// AnnounceAndPeers is Announce, then Peers(n) and Counts, as one operation.
	AnnounceAndPeers(ctx context.Context, infoHash [20]byte, p Peer, n int) (peers []Peer, complete, incomplete int, err error)
}

// AnnounceAndPeers records p and returns up to n live peers of the swarm
// (p itself may be among them) and its counts, in one step when s is an
// Announcer and in three calls otherwise.
func AnnounceAndPeers(ctx context.Context, s Store, infoHash [20]byte, p Peer, n int) (peers []Peer, complete, incomplete int, err error) {
	if a, ok := s.(Announcer); ok {
		return a.AnnounceAndPeers(ctx, infoHash, p, n)
	}
	if err = s.Announce(ctx, infoHash, p); err != nil {
		return nil, 0, 0, err
	}
	if n > 0 {
		if peers, err = s.Peers(ctx, infoHash, n); err != nil {
			return nil, 0, 0, err
		}
	}
	complete, incomplete, err = s.Counts(ctx, infoHash)
	if err != nil {
		return nil, 0, 0, err
	}
	return peers, complete, incomplete, nil
}
