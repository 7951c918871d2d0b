package p2p

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/tracker/shared"
	"github.com/anacrolix/torrent/types"

	"github.com/shoal-dev/shoal/internal/store"
)

// Swarm is this node's membership in one blob's swarm.
type Swarm struct {
	n       *Node
	mi      *MetaInfo
	t       *torrent.Torrent
	st      *blobStorage
	dl      *store.Download
	onClose func()
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	once      sync.Once
	announced chan struct{} // closed after the first successful announce
	lastUse   time.Time     // guarded by n.mu
}

// MetaInfo of the blob.
func (s *Swarm) MetaInfo() *MetaInfo { return s.mi }

// Complete reports whether every piece is here and verified.
func (s *Swarm) Complete() bool { return s.t.Complete().Bool() }

// BytesCompleted counts verified bytes held.
func (s *Swarm) BytesCompleted() int64 { return s.t.BytesCompleted() }

// Announced is closed once the tracker has heard of this node for the blob.
func (s *Swarm) Announced() <-chan struct{} { return s.announced }

// Close leaves the swarm: announces "stopped", drops the torrent, then
// releases the download; the storage's reader closes a moment later.
func (s *Swarm) Close() {
	s.once.Do(func() {
		if s.dl != nil {
			s.dl.SetWant(nil)
		}
		s.cancel()
		s.wg.Wait()
		s.t.Drop()
		s.n.downloads.Delete(s.mi.InfoHash)
		s.n.mu.Lock()
		if m := s.n.byDigest(s.mi); m[s.mi.Digest.String()] == s {
			delete(m, s.mi.Digest.String())
		}
		s.n.mu.Unlock()
		if s.onClose != nil {
			s.onClose()
		}
		s.st.retire()
	})
}

// Readahead past a reader's offset that want raises, and how far ahead of
// the in-order prefix a reader must be for it to: near the prefix, the
// library's own order (partial pieces, then rarest, then lowest index)
// already serves readers, and agents that all raised the same pieces
// would all ask the origin for them.
const (
	wantReadahead = 4 << 20
	wantAhead     = 2 // pieces
)

// want raises the priority of the pieces from byte off on (wantReadahead
// of them) when a client waits for bytes far ahead of the in-order prefix,
// as a client fetching the blob in parallel ranges does.
func (s *Swarm) want(off int64) {
	pl := s.mi.Info.PieceLength
	first := int(off / pl)
	if first < s.st.prefixPieces()+wantAhead {
		return
	}
	last := min(int((off+wantReadahead-1)/pl), s.mi.Info.NumPieces()-1)
	for i := first; i <= last; i++ {
		s.t.Piece(i).SetPriority(types.PiecePriorityHigh)
	}
}

// announceLoop keeps the tracker informed and feeds the peers it returns to
// the client: every AnnounceInterval while downloading, at the tracker's
// interval once complete, at once on completion, and "stopped" on close.
func (s *Swarm) announceLoop(ctx context.Context) {
	if s.n.tracker == nil {
		return
	}
	event := shared.Started
	complete := s.t.Complete()
	wasComplete := complete.Bool()
	if wasComplete {
		event = shared.Completed
	}
	backoff := s.n.cfg.AnnounceInterval
	for {
		interval, err := s.announce(ctx, event)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			s.n.log.Warn("announce failed", "digest", s.mi.Digest, "err", err)
			interval = backoff
			backoff = min(2*backoff, time.Minute)
		} else {
			event = shared.None
			backoff = s.n.cfg.AnnounceInterval
			s.markAnnounced()
		}
		if !complete.Bool() {
			interval = min(interval, s.n.cfg.AnnounceInterval)
		}
		timer := time.NewTimer(interval)
		var done <-chan struct{}
		if !wasComplete {
			done = complete.On()
		}
		select {
		case <-ctx.Done():
			timer.Stop()
			s.stop()
			return
		case <-done:
			wasComplete = true
			event = shared.Completed
		case <-timer.C:
		}
		timer.Stop()
	}
	s.stop()
}

func (s *Swarm) markAnnounced() {
	select {
	case <-s.announced:
	default:
		close(s.announced)
	}
}

func (s *Swarm) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = s.announce(ctx, shared.Stopped)
}

func (s *Swarm) announce(ctx context.Context, event shared.AnnounceEvent) (time.Duration, error) {
	left := s.mi.Info.Length - s.t.BytesCompleted()
	st := s.t.Stats()
	resp, err := s.n.tracker.Announce(ctx, AnnounceArgs{
		InfoHash:   s.mi.InfoHash,
		PeerID:     s.n.peerID,
		Port:       s.n.addr.Port(),
		Left:       left,
		Uploaded:   st.BytesWrittenData.Int64(),
		Downloaded: st.BytesReadUsefulData.Int64(),
		Event:      event,
		// Only holders of the whole blob seed a standard torrent: the
		// peers worth meeting are the clients that download it, and they
		// dial the seeds the tracker lists them. The tracker would list
		// the other seeds first, and a connection between two seeds is
		// only opened to be dropped.
		NoPeers: s.mi.Standard,
	})
	if err != nil {
		return 0, err
	}
	if event == shared.Stopped {
		return 0, nil
	}
	interval := time.Duration(max(resp.Interval, 1)) * time.Second
	if s.mi.Standard {
		return interval, nil
	}
	peers := make([]torrent.PeerInfo, 0, len(resp.Peers))
	for _, p := range resp.Peers {
		if p.Port == int(s.n.addr.Port()) && net.IP(p.IP).Equal(s.n.addr.Addr().AsSlice()) {
			continue // ourselves
		}
		pi := torrent.PeerInfo{Addr: &net.TCPAddr{IP: p.IP, Port: p.Port}, Source: torrent.PeerSourceTracker}
		copy(pi.Id[:], p.ID)
		peers = append(peers, pi)
	}
	s.t.AddPeers(peers)
	return interval, nil
}
