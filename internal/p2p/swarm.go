package p2p

import (
	"context"
	"net"
	"net/netip"
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
	m       member
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
func (s *Swarm) Complete() bool { return s.m.complete() }

// BytesCompleted counts verified bytes held.
func (s *Swarm) BytesCompleted() int64 { return s.m.bytesCompleted() }

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
		s.m.drop()
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
// engine's own order (the prefix's next piece first) already serves
// readers, and agents that all raised the same pieces would all ask the
// origin for them.
const (
	wantReadahead = 4 << 20
	wantAhead     = 2 // pieces
)

// want raises the pieces from byte off on (wantReadahead of them) when a
// client waits for bytes far ahead of the in-order prefix, as a client
// fetching the blob in parallel ranges does.
func (s *Swarm) want(off int64) {
	pl := s.mi.Info.PieceLength
	first := int(off / pl)
	if first < s.st.prefixPieces()+wantAhead {
		return
	}
	last := min(int((off+wantReadahead-1)/pl), s.mi.Info.NumPieces()-1)
	s.m.raise(first, last)
}

// member is a swarm's transfer: the engine's for live swarms, the
// library's torrent for standard ones.
type member interface {
	complete() bool
	completed() <-chan struct{} // closed once complete
	bytesCompleted() int64
	traffic() (up, down int64)
	addPeers([]netip.AddrPort, [][20]byte)
	wantsPeers() bool // whether an announce should ask the tracker for peers
	lonely() bool     // downloading with no connection, none being dialled, nobody to dial
	raise(first, last int)
	closeBanned(banned func(netip.Addr) bool)
	numConns() int
	drop()
}

func (t *transfer) completed() <-chan struct{} { return t.done }
func (t *transfer) traffic() (up, down int64)  { return t.up.Load(), t.down.Load() }
func (t *transfer) drop()                      { t.e.remove(t) }

func (t *transfer) closeBanned(banned func(netip.Addr) bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.conns {
		if banned(c.addr.Addr()) {
			t.dropLocked(c)
		}
	}
	t.fillAllLocked()
}

// libTorrent is a torrent on the library: a standard torrent, or a live
// one with p2p.engine = "library".
type libTorrent struct{ t *torrent.Torrent }

func (l libTorrent) complete() bool             { return l.t.Complete().Bool() }
func (l libTorrent) completed() <-chan struct{} { return l.t.Complete().On() }
func (l libTorrent) bytesCompleted() int64      { return l.t.BytesCompleted() }
func (l libTorrent) raise(first, last int) {
	for i := first; i <= last; i++ {
		l.t.Piece(i).SetPriority(types.PiecePriorityHigh)
	}
}
func (l libTorrent) numConns() int    { return len(l.t.PeerConns()) }
func (l libTorrent) wantsPeers() bool { return true }
func (l libTorrent) lonely() bool     { return !l.complete() && l.numConns() == 0 }
func (l libTorrent) drop()            { l.t.Drop() }

func (l libTorrent) traffic() (up, down int64) {
	st := l.t.Stats()
	return st.BytesWrittenData.Int64(), st.BytesReadUsefulData.Int64()
}

func (l libTorrent) addPeers(peers []netip.AddrPort, ids [][20]byte) {
	pis := make([]torrent.PeerInfo, len(peers))
	for k, ap := range peers {
		pis[k] = torrent.PeerInfo{Addr: net.TCPAddrFromAddrPort(ap), Source: torrent.PeerSourceTracker}
		if k < len(ids) {
			copy(pis[k].Id[:], ids[k][:])
		}
	}
	l.t.AddPeers(pis)
}

func (l libTorrent) closeBanned(banned func(netip.Addr) bool) {
	for _, pc := range l.t.PeerConns() {
		if a, ok := peerAddr(pc.RemoteAddr); ok && banned(a) {
			pc.Close()
		}
	}
}

// announceLoop keeps the tracker informed and feeds the peers it returns to
// the client: every AnnounceInterval while downloading short of peers to
// dial, at the tracker's interval once complete or while it knows peers
// enough, at once on completion, and "stopped" on close.
func (s *Swarm) announceLoop(ctx context.Context) {
	if s.n.tracker == nil {
		return
	}
	event := shared.Started
	wasComplete := s.m.complete()
	if wasComplete {
		event = shared.Completed
	}
	backoff := s.n.cfg.AnnounceInterval
	soon := lonelyAnnounce
	var last time.Time                       // of the last announce the tracker took
	trackerEvery := s.n.cfg.AnnounceInterval // what it asked for then
	for {
		var interval time.Duration
		var err error
		if event == shared.None && time.Since(last) < trackerEvery && !s.m.complete() && !s.m.wantsPeers() {
			// A downloading swarm that knows peers enough to dial only
			// keeps its place at the tracker, which needs that once an
			// interval: at N = 256 on 0.125 MB/s links, announces every
			// AnnounceInterval were 3 % of the swarm's system calls, and
			// a thousand nodes pulling at once would send a tracker
			// hundreds a second. Short of peers, it asks at the next tick.
			interval = s.n.cfg.AnnounceInterval
			s.n.announcesSkipped.Add(1)
		} else if interval, err = s.announce(ctx, event); err != nil {
			if ctx.Err() != nil {
				break
			}
			s.n.log.Warn("announce failed", "digest", s.mi.Digest, "err", err)
			interval = backoff
			backoff = min(2*backoff, time.Minute)
		} else {
			event = shared.None
			backoff = s.n.cfg.AnnounceInterval
			last, trackerEvery = time.Now(), interval
			s.markAnnounced()
		}
		if !s.m.complete() {
			interval = min(interval, s.n.cfg.AnnounceInterval)
			if err == nil && s.m.lonely() {
				interval = min(interval, soon)
				soon = min(2*soon, s.n.cfg.AnnounceInterval)
			} else {
				soon = lonelyAnnounce
			}
		}
		timer := time.NewTimer(interval)
		var done <-chan struct{}
		if !wasComplete {
			done = s.m.completed()
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

// lonelyAnnounce is how soon a downloading swarm that knows nobody announces
// again, doubling up to announce_interval. The first agent to ask for a
// cold blob often announces a moment before the origin that just began
// fetching it, and was told of no peer: it waited announce_interval (3 s)
// for a blob the origin had at once (bench single, 8 MiB: 1 pull in 10
// took 3.1 s instead of 0.15 s).
const lonelyAnnounce = 100 * time.Millisecond

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
	left := s.mi.Info.Length - s.m.bytesCompleted()
	up, down := s.m.traffic()
	quiet := s.mi.Standard || !s.m.wantsPeers()
	if quiet {
		s.n.announcesQuiet.Add(1)
	} else {
		s.n.announcesAsked.Add(1)
	}
	resp, err := s.n.tracker.Announce(ctx, AnnounceArgs{
		InfoHash:   s.mi.InfoHash,
		PeerID:     s.n.peerID,
		Port:       s.n.addr.Port(),
		Left:       left,
		Uploaded:   up,
		Downloaded: down,
		Event:      event,
		// Only holders of the whole blob seed a standard torrent: the
		// peers worth meeting are the clients that download it, and they
		// dial the seeds the tracker lists them. The tracker would list
		// the other seeds first, and a connection between two seeds is
		// only opened to be dropped.
		NoPeers: quiet,
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
	peers := make([]netip.AddrPort, 0, len(resp.Peers))
	ids := make([][20]byte, 0, len(resp.Peers))
	for _, p := range resp.Peers {
		ip, ok := netip.AddrFromSlice(p.IP)
		if !ok || p.Port <= 0 || p.Port > 65535 {
			continue
		}
		ap := netip.AddrPortFrom(ip.Unmap(), uint16(p.Port))
		if ap == s.n.addr {
			continue // ourselves
		}
		var id [20]byte
		copy(id[:], p.ID)
		peers = append(peers, ap)
		ids = append(ids, id)
	}
	s.m.addPeers(peers, ids)
	return interval, nil
}
