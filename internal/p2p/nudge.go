package p2p

import (
	"context"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/types"
)

// The in-order prefix is what a client streaming the blob reads, and what
// the store hashes into the blob's sha256 as it grows. The library picks
// pieces rarest first; when a fast origin has put every piece in the swarm
// early, all are about as rare and the first piece may come last: with the
// origin at 10 R, 64 agents saw their first byte at half of T_min, and all
// the hashing was left for the end.
//
// So the prefix's next piece is raised to high priority while nobody is
// asked for it, and lowered again once a request for it is sent. Raised
// for longer, it would be stolen: the library lets a peer with a free
// request slot take a higher-priority request from another (one that got a
// block less recently), and the cancelled blocks arrive twice. Raising the
// next few pieces for good cost 10-20 % of the completion time that way.

// requested counts a request sent (+1) or deleted (-1: answered,
// cancelled, rejected, or its connection closed) for the piece. The library
// calls it under its lock: it only counts, and wakes the nudger when the
// prefix's next piece is concerned.
func (s *blobStorage) requested(piece int, d int32) {
	if piece < 0 || piece >= len(s.pending) {
		return
	}
	s.pending[piece].Add(d)
	if int32(piece) == s.prefix.Load() {
		s.kick()
	}
}

func (s *blobStorage) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// nudgeLoop keeps at most one piece raised: the prefix's next one, while
// it is neither requested nor already in (received, being hashed). raised
// is the piece nudge raised before the loop started (-1: none).
func (s *Swarm) nudgeLoop(ctx context.Context, t *torrent.Torrent, raised int) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.st.wake:
		}
		raised = s.nudge(t, raised)
	}
}

// nudge raises the prefix's next piece if it is neither requested nor in,
// lowers the one raised before (raised, -1: none) if that is no longer it,
// and returns the piece now raised.
func (s *Swarm) nudge(t *torrent.Torrent, raised int) int {
	st := s.st
	want := -1
	if h := st.prefixPieces(); h < len(st.pending) && st.pending[h].Load() == 0 {
		if ps := t.Piece(h).State(); !ps.Complete && !ps.Partial && !ps.Checking {
			want = h
		}
	}
	if raised == want {
		return raised
	}
	if raised >= 0 {
		t.Piece(raised).SetPriority(types.PiecePriorityNormal)
	}
	if want >= 0 {
		t.Piece(want).SetPriority(types.PiecePriorityHigh)
	}
	return want
}

// countRequest feeds requests sent and deleted to the download's storage.
func (n *Node) countRequest(ev torrent.PeerRequestEvent, d int32) {
	if st, ok := n.downloads.Load(ev.Peer.Torrent().InfoHash()); ok {
		st.(*blobStorage).requested(int(ev.Index), d)
	}
}
