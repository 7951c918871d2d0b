package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/config"
)

// GC defaults (percent of the capacity).
const (
	DefaultHighWatermark = 80
	DefaultLowWatermark  = 60
	DefaultGCInterval    = time.Minute
)

// GCConfig bounds the disk used by verified blobs. Once they exceed
// HighWatermark percent of Capacity, the least recently used blobs that
// nobody is reading are removed until usage is below LowWatermark percent.
type GCConfig struct {
	Capacity      int64 // bytes; 0 = unlimited (no GC)
	HighWatermark int   // percent
	LowWatermark  int   // percent
	// OnEvict is called (outside the store's locks) for every evicted blob,
	// e.g. to stop seeding it: an open descriptor keeps its disk space.
	OnEvict func(digest.Digest)
}

// CacheConfig is the disk-cache part of a role's TOML config (agent and
// origin embed it): cache_capacity and the GC watermarks.
type CacheConfig struct {
	// CacheCapacity is the disk the verified blobs may use (0 = unlimited).
	// Above GCHighWatermark percent of it, the least recently used blobs
	// nobody is reading are removed until usage is below GCLowWatermark.
	CacheCapacity   config.ByteSize `toml:"cache_capacity"`
	GCHighWatermark int             `toml:"gc_high_watermark"`
	GCLowWatermark  int             `toml:"gc_low_watermark"`
}

// ApplyDefaults fills the watermarks left unset.
func (c *CacheConfig) ApplyDefaults() {
	if c.GCHighWatermark == 0 {
		c.GCHighWatermark = DefaultHighWatermark
	}
	if c.GCLowWatermark == 0 {
		c.GCLowWatermark = DefaultLowWatermark
	}
}

// Validate names the bad key.
func (c *CacheConfig) Validate() error {
	return CheckGC(c.CacheCapacity, c.GCHighWatermark, c.GCLowWatermark)
}

// GC is the store's GC setting for this config.
func (c CacheConfig) GC(onEvict func(digest.Digest)) GCConfig {
	return GCConfig{Capacity: int64(c.CacheCapacity), HighWatermark: c.GCHighWatermark,
		LowWatermark: c.GCLowWatermark, OnEvict: onEvict}
}

// CheckGC validates the GC keys of a role's config, naming the bad key.
func CheckGC(capacity config.ByteSize, high, low int) error {
	if capacity < 0 {
		return config.Errorf("cache_capacity", "want 0 (unlimited) or a size, got %d", int64(capacity))
	}
	if high <= 0 || high > 100 {
		return config.Errorf("gc_high_watermark", "want a percentage from 1 to 100, got %d", high)
	}
	if low <= 0 || low >= high {
		return config.Errorf("gc_low_watermark", "want a percentage from 1 to below gc_high_watermark (%d), got %d", high, low)
	}
	return nil
}

// entry is what GC knows of one verified blob.
type entry struct {
	size   int64
	access time.Time // last Open/OpenOrFollow/Stat hit (or file mtime at start)
}

// gcState is guarded by Store.mu except where noted.
type gcState struct {
	cfg   GCConfig
	blobs map[digest.Digest]*entry
	usage int64
	pins  map[digest.Digest]int // open readers handed out by OpenOrFollow
	// held keeps preheated blobs out of GC until a time (PinUntil); kept
	// on disk beside the blob, so it survives a restart.
	held map[digest.Digest]time.Time

	run     sync.Mutex    // one eviction pass at a time
	kick    chan struct{} // wakes RunGC after a commit crossed the high mark
	evicted atomic.Int64
	freed   atomic.Int64
}

func (g *gcState) init() {
	g.blobs = map[digest.Digest]*entry{}
	g.pins = map[digest.Digest]int{}
	g.held = map[digest.Digest]time.Time{}
	g.kick = make(chan struct{}, 1)
}

// scanBlobs seeds the usage and access times from the files under blobs/.
func (s *Store) scanBlobs() error {
	dir := filepath.Join(s.root, "blobs", string(digest.SHA256))
	subs, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, sub := range subs {
		if !sub.IsDir() {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(dir, sub.Name()))
		if err != nil {
			return err
		}
		for _, e := range ents {
			d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
			if d.Validate() != nil { // a metadata file (<hex>.<name>) or a stranger
				continue
			}
			fi, err := e.Info()
			if err != nil || !fi.Mode().IsRegular() {
				continue
			}
			s.gc.blobs[d] = &entry{size: fi.Size(), access: fi.ModTime()}
			s.gc.usage += fi.Size()
			if until, err := s.readPin(d); err == nil {
				s.gc.held[d] = until
			}
		}
	}
	return nil
}

// SetGC sets the capacity and watermarks (before or while the store is used).
func (s *Store) SetGC(cfg GCConfig) {
	s.mu.Lock()
	s.gc.cfg = cfg
	s.mu.Unlock()
}

// Usage is the size of all verified blobs, in bytes.
func (s *Store) Usage() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gc.usage
}

// GCStats counts evictions since the store was opened.
type GCStats struct {
	Evicted int64 // blobs
	Freed   int64 // bytes
}

// Stats of the GC so far.
func (s *Store) Stats() GCStats {
	return GCStats{Evicted: s.gc.evicted.Load(), Freed: s.gc.freed.Load()}
}

// Collectors are the store's metrics, named <prefix>_cache_bytes,
// <prefix>_cache_capacity_bytes and <prefix>_cache_evicted_{blobs,bytes}_total.
func (s *Store) Collectors(prefix string) []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: prefix + "_cache_bytes", Help: "Bytes of verified blobs in the store."},
			func() float64 { return float64(s.Usage()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: prefix + "_cache_capacity_bytes", Help: "Configured store capacity (0 = unlimited)."},
			func() float64 { s.mu.Lock(); defer s.mu.Unlock(); return float64(s.gc.cfg.Capacity) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: prefix + "_cache_evicted_blobs_total", Help: "Blobs removed by disk GC."},
			func() float64 { return float64(s.gc.evicted.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: prefix + "_cache_evicted_bytes_total", Help: "Bytes freed by disk GC."},
			func() float64 { return float64(s.gc.freed.Load()) }),
	}
}

// RunGC evicts on every tick and whenever a commit crossed the high
// watermark, until ctx ends.
func (s *Store) RunGC(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.gc.kick:
		}
		s.GC()
	}
}

// touchLocked records an access to d.
func (s *Store) touchLocked(d digest.Digest) {
	if e := s.gc.blobs[d]; e != nil {
		e.access = s.now()
	}
}

func (s *Store) touch(d digest.Digest) {
	s.mu.Lock()
	s.touchLocked(d)
	s.mu.Unlock()
}

// addLocked accounts for a newly committed blob and wakes RunGC if the
// store went over its high watermark.
func (s *Store) addLocked(d digest.Digest, size int64) {
	if old := s.gc.blobs[d]; old != nil {
		s.gc.usage -= old.size
	}
	s.gc.blobs[d] = &entry{size: size, access: s.now()}
	s.gc.usage += size
	if s.overHighLocked() {
		select {
		case s.gc.kick <- struct{}{}:
		default:
		}
	}
}

func (s *Store) dropLocked(d digest.Digest) {
	if e := s.gc.blobs[d]; e != nil {
		s.gc.usage -= e.size
		delete(s.gc.blobs, d)
	}
	delete(s.verified, d)
	delete(s.gc.held, d)
}

func (s *Store) overHighLocked() bool {
	c := s.gc.cfg
	return c.Capacity > 0 && s.gc.usage > c.Capacity*int64(c.HighWatermark)/100
}

// pin keeps d from eviction until the returned func runs.
func (s *Store) pinLocked(d digest.Digest) func() {
	s.gc.pins[d]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.gc.pins[d]--; s.gc.pins[d] <= 0 {
				delete(s.gc.pins, d)
			}
			s.mu.Unlock()
		})
	}
}

// pinnedBlob releases its pin on Close.
type pinnedBlob struct {
	Blob
	unpin func()
}

// File is the verified blob file under the pin, if the blob is complete:
// serving the *os.File itself lets the kernel copy it (sendfile).
func (p *pinnedBlob) File() (*os.File, bool) {
	f, ok := p.Blob.(*os.File)
	return f, ok
}

func (p *pinnedBlob) Close() error {
	err := p.Blob.Close()
	p.unpin()
	return err
}

// GC evicts least recently used blobs if usage is above the high
// watermark, until it is below the low one. Blobs with open readers
// (from OpenOrFollow) and running downloads are skipped. It returns how many
// blobs and bytes it removed.
func (s *Store) GC() (int, int64) {
	s.gc.run.Lock()
	defer s.gc.run.Unlock()
	s.mu.Lock()
	if !s.overHighLocked() {
		s.mu.Unlock()
		return 0, 0
	}
	c := s.gc.cfg
	target := c.Capacity * int64(c.LowWatermark) / 100
	now := s.now()
	type cand struct {
		d digest.Digest
		e *entry
	}
	cands := make([]cand, 0, len(s.gc.blobs))
	for d, e := range s.gc.blobs {
		cands = append(cands, cand{d, e})
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].e.access.Before(cands[j].e.access) })
	var gone []digest.Digest
	var freed int64
	for _, cd := range cands {
		if s.gc.usage < target {
			break
		}
		if s.gc.pins[cd.d] > 0 || s.active[cd.d] != nil || s.gc.held[cd.d].After(now) {
			continue
		}
		// Under s.mu: an Open racing with us either pinned first (and we
		// skipped) or finds no file. Unlinking is atomic, so nobody sees a
		// partial blob.
		if err := s.removeLocked(cd.d); err != nil {
			s.log.Warn("evict blob", "digest", cd.d, "err", err)
			continue
		}
		gone = append(gone, cd.d)
		freed += cd.e.size
	}
	usage := s.gc.usage
	onEvict := c.OnEvict
	s.mu.Unlock()
	if len(gone) == 0 {
		s.log.Warn("store over its high watermark but nothing can be evicted", "usage_bytes", usage, "capacity_bytes", c.Capacity)
		return 0, 0
	}
	s.gc.evicted.Add(int64(len(gone)))
	s.gc.freed.Add(freed)
	s.log.Info("evicted blobs", "count", len(gone), "bytes", freed, "usage_bytes", usage, "capacity_bytes", c.Capacity)
	if onEvict != nil {
		for _, d := range gone {
			onEvict(d)
		}
	}
	return len(gone), freed
}

// removeLocked unlinks blob d, then its metadata files (<blob>.<name>), and
// forgets it. It fails only if the blob itself stays; a metadata file that
// cannot be removed is logged (it is never read without its blob).
func (s *Store) removeLocked(d digest.Digest) error {
	p := s.Path(d)
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", d, err)
	}
	s.dropLocked(d)
	metas, _ := filepath.Glob(p + ".*") // hex digests hold no glob syntax
	for _, m := range metas {
		if err := os.Remove(m); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("delete blob metadata", "digest", d, "path", m, "err", err)
		}
	}
	return nil
}

// pinMeta names the metadata file that holds a blob's PinUntil time.
const pinMeta = "pin"

// PinUntil keeps blob d out of disk GC until t (a later pin extends an
// earlier one, an earlier one changes nothing). The time is written beside
// the blob, so it holds across restarts; d need not be stored yet.
func (s *Store) PinUntil(d digest.Digest, t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !t.After(s.gc.held[d]) {
		return nil
	}
	if err := s.WriteMeta(d, pinMeta, []byte(t.UTC().Format(time.RFC3339))); err != nil {
		return err
	}
	s.gc.held[d] = t
	return nil
}

// PinnedUntil is the time blob d is kept out of GC until (zero: not pinned).
func (s *Store) PinnedUntil(d digest.Digest) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gc.held[d]
}

func (s *Store) readPin(d digest.Digest) (time.Time, error) {
	b, err := s.ReadMeta(d, pinMeta)
	if err != nil {
		return time.Time{}, err
	}
	return time.Parse(time.RFC3339, string(b))
}
