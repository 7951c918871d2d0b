// Package bench measures Shoal against the physical bound: a loopback
// cluster with per-node bandwidth caps, all agents pulling one blob at the
// same moment, compared with T_min and (optionally) with every client pulling
// straight from a capped registry in the same run.
package bench

import (
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/time/rate"

	"github.com/shoal-dev/shoal/agent"
	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/internal/p2p/wire"
	"github.com/shoal-dev/shoal/internal/procstat"
	"github.com/shoal-dev/shoal/proto"
	"github.com/shoal-dev/shoal/testbed/cluster"
	"github.com/shoal-dev/shoal/testbed/localregistry"
	"github.com/shoal-dev/shoal/tracker"
)

// SwarmOptions describe one swarm run.
type SwarmOptions struct {
	Agents, Origins int
	Size            config.ByteSize
	PieceSize       config.ByteSize // 0: the origins' choice by blob size
	// Rate caps each agent's upload and download; OriginRate each origin's
	// upload (default Rate); UpstreamRate the registry's upload (default
	// OriginRate).
	Rate, OriginRate, UpstreamRate config.Rate
	// WarmOrigins preheats the origins before the clock starts.
	WarmOrigins bool
	// SlowFraction of the agents have links of Rate / SlowDivisor (uneven
	// links); LateFraction start when the on-time agents are half done;
	// ChurnFraction are killed then (mid-pull) and replaced by fresh agents
	// that pull from scratch. Each is a fraction in [0, 1).
	SlowFraction, SlowDivisor, LateFraction, ChurnFraction float64
	// ConnsPerTorrent, if set, is every agent's p2p.conns_per_torrent;
	// RequestsPerPeer its p2p.requests_per_peer. SlowConns, if set, is the
	// slow agents' conns_per_torrent (docs/config.md: a node on a link a
	// quarter of the others' does best with half the connections).
	ConnsPerTorrent, RequestsPerPeer, SlowConns int
	// MaxPeers, if set, is the tracker's max_peers (peers per announce).
	MaxPeers int
	// Engine, if set, is every agent's p2p.engine.
	Engine string
	// Baseline "direct" also times the same clients pulling straight from
	// the registry (capped at UpstreamRate), in the same run.
	Baseline string
	// Netns runs every agent as its own process in its own network
	// namespace (netlab): tc caps its links at its rate, and every packet
	// waits RTT/2 where it is received. Binary is the shoal executable
	// (default: this one).
	Netns  bool
	RTT    time.Duration
	MTU    int // of every link with Netns (0: 1500)
	Binary string
	Dir    string
	// StallDump, if set, is a directory where the first pull to go
	// DefaultStallAfter without a byte leaves the goroutines of the swarm's
	// and the clients' processes and the kernel's TCP counters (stallWatch).
	// Stalled pulls are counted either way.
	StallDump string
	Log       *slog.Logger
}

// SwarmResult is one run's measurements; JSON keys are shared with
// `shoal demo --json`.
type SwarmResult struct {
	Agents          int       `json:"agents"`
	Origins         int       `json:"origins"`
	BlobBytes       int64     `json:"blob_bytes"`
	PieceBytes      int64     `json:"piece_bytes"`
	RateBps         int64     `json:"rate_bytes_per_second"`
	OriginRateBps   int64     `json:"origin_rate_bytes_per_second"`
	UpstreamRateBps int64     `json:"upstream_rate_bytes_per_second"`
	WarmOrigins     bool      `json:"warm_origins"`
	TMinSeconds     float64   `json:"t_min_seconds"`
	AgentSecondsP50 float64   `json:"agent_seconds_p50"`
	AgentSecondsP90 float64   `json:"agent_seconds_p90"`
	AgentSecondsMax float64   `json:"agent_seconds_max"`
	P50OverTMin     float64   `json:"p50_over_tmin"`
	MaxOverTMin     float64   `json:"max_over_tmin"`
	TTFBSecondsP50  float64   `json:"ttfb_seconds_p50"`
	AgentSeconds    []float64 `json:"agent_seconds"`
	// Scenario rows (uneven links, late joiners, churn): each client's time
	// over its own bound (ClientResult), p50 and max over every timed
	// client, and p50 over the on-time clients that were not killed.
	SlowFraction       float64        `json:"slow_fraction,omitempty"`
	SlowDivisor        float64        `json:"slow_divisor,omitempty"`
	LateFraction       float64        `json:"late_fraction,omitempty"`
	ChurnFraction      float64        `json:"churn_fraction,omitempty"`
	ConnsPerTorrent    int            `json:"conns_per_torrent,omitempty"`
	SlowConns          int            `json:"slow_conns_per_torrent,omitempty"`
	RequestsPerPeer    int            `json:"requests_per_peer,omitempty"`
	MaxPeers           int            `json:"max_peers,omitempty"`
	Engine             string         `json:"engine,omitempty"`
	P50OverBound       float64        `json:"p50_over_bound"`
	MaxOverBound       float64        `json:"max_over_bound"`
	OnTimeP50OverBound float64        `json:"on_time_p50_over_bound"`
	Clients            []ClientResult `json:"clients"`
	BytesFromUpstream  int64          `json:"bytes_from_upstream"`
	BytesFromOrigins   int64          `json:"bytes_from_origins"`
	BytesFromPeers     int64          `json:"bytes_from_peers"`
	BytesWasted        int64          `json:"bytes_wasted"`   // received twice, or in a bad piece
	RequestsMoved      int64          `json:"requests_moved"` // taken back from stalled peers (the engine's stall rule)
	PiecesLost         int64          `json:"pieces_lost"`    // handed out again by an origin after their only holder left
	OriginBytesSent    int64          `json:"origin_bytes_sent"`
	OriginSentOverF    float64        `json:"origin_sent_over_blob"`
	UpstreamBlobGets   int            `json:"upstream_blob_gets"`
	AllVerified        bool           `json:"all_verified"`
	CPUSeconds         float64        `json:"cpu_seconds"` // the swarm's processes (not the clients': client_cpu_seconds)
	ClientCPUSeconds   float64        `json:"client_cpu_seconds,omitempty"`
	CPUCores           int            `json:"cpu_cores"`
	CPUBound           bool           `json:"cpu_bound"`
	// Read-like and write-like system calls the process made during the
	// run (in-process runs): a measure of per-message work that does not
	// move with the machine's load the way CPU time does.
	ReadSyscalls  int64 `json:"read_syscalls,omitempty"`
	WriteSyscalls int64 `json:"write_syscalls,omitempty"`
	// EmptyReads is how many of the peer-wire readers' reads found the
	// socket empty (the probes for a reset; wire.Recvmsgs).
	EmptyReads       int64    `json:"empty_reads,omitempty"`
	PeakRSSBytes     int64    `json:"peak_rss_bytes"`
	DirectSecondsP50 float64  `json:"direct_seconds_p50,omitempty"`
	DirectSecondsMax float64  `json:"direct_seconds_max,omitempty"`
	SpeedupP50       float64  `json:"speedup_p50,omitempty"`
	Failures         []string `json:"failures,omitempty"`
	// StalledPulls went DefaultStallAfter without a byte (in-process runs).
	StalledPulls int64 `json:"stalled_pulls"`
	// --netns runs: the RTT asked for, the delay's mechanism, the connect
	// RTT measured from agent 0 to the tracker and to agent 1 before the
	// run, the packets delayed, the agents' CPU time, the machine's busy CPU time (the kernel's
	// softirq work included) and the agents' largest peak RSS.
	Netns                  bool    `json:"netns,omitempty"`
	RTTSeconds             float64 `json:"rtt_seconds,omitempty"`
	MTU                    int     `json:"mtu,omitempty"`
	Delay                  string  `json:"delay,omitempty"`
	MeasuredRTTSeconds     float64 `json:"measured_rtt_seconds,omitempty"`
	MeasuredPeerRTTSeconds float64 `json:"measured_peer_rtt_seconds,omitempty"`
	DelayedPackets         int64   `json:"delayed_packets,omitempty"`
	HostCPUSeconds         float64 `json:"host_cpu_seconds,omitempty"`
	AgentCPUSeconds        float64 `json:"agent_cpu_seconds,omitempty"` // the agent processes' part of cpu_seconds
	AgentPeakRSSBytes      int64   `json:"agent_peak_rss_bytes,omitempty"`
}

// TMin is the fluid lower bound (Kumar and Ross): the origins' total upload,
// one agent's download, and the swarm's total upload each bound the time; a
// cold run also waits for the upstream's upload.
func TMin(n int, f, u, uOrigins, uUpstream float64, cold bool) float64 {
	t := max(f/uOrigins, f/u, float64(n)*f/(uOrigins+float64(n)*u))
	if cold {
		t = max(t, f/uUpstream)
	}
	return t
}

// ApplyDefaults fills the rates left at 0: origins at Rate, upstream at
// OriginRate, one origin.
func (o *SwarmOptions) ApplyDefaults() {
	if o.OriginRate == 0 {
		o.OriginRate = o.Rate
	}
	if o.UpstreamRate == 0 {
		o.UpstreamRate = o.OriginRate
	}
	if o.Origins == 0 {
		o.Origins = 1
	}
	if o.SlowDivisor == 0 {
		o.SlowDivisor = 4
	}
}

// trackerConfig applies the options that are the tracker's.
func (o *SwarmOptions) trackerConfig(tc *tracker.Config) {
	if o.MaxPeers > 0 {
		tc.MaxPeers = o.MaxPeers
	}
}

// Swarm runs one measurement.
func Swarm(ctx context.Context, o SwarmOptions) (*SwarmResult, error) {
	o.ApplyDefaults()
	if o.Rate <= 0 {
		return nil, fmt.Errorf("bench: --rate must be positive")
	}
	if err := o.validateScenario(); err != nil {
		return nil, err
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Netns {
		return swarmNetns(ctx, o)
	}
	sc := newScenario(o)
	c, err := cluster.Start(cluster.Options{Dir: o.Dir, Agents: o.Agents, Origins: o.Origins,
		AgentRate: o.Rate, OriginRate: o.OriginRate, UpstreamRate: o.UpstreamRate, PieceLength: o.PieceSize, Log: o.Log,
		TrackerConfig: o.trackerConfig,
		AgentConfig: func(i int, ac *agent.Config) {
			ac.P2P.UploadRate, ac.P2P.DownloadRate = o.agentRate(sc, i), o.agentRate(sc, i)
			if n := o.agentConns(sc, i); n > 0 {
				ac.P2P.ConnsPerTorrent = n
			}
			if o.RequestsPerPeer > 0 {
				ac.P2P.RequestsPerPeer = o.RequestsPerPeer
			}
			if o.Engine != "" {
				ac.P2P.Engine = o.Engine
			}
		}})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	d, want, err := pushBlob(ctx, c, o)
	if err != nil {
		return nil, err
	}
	counted := countUpstream(c, d)
	r := newSwarmResult(o)

	clients, err := startClients(ctx, os.Stderr)
	if err != nil {
		return nil, err
	}
	stalls := &stallWatch{dir: o.StallDump, log: o.Log, clients: clients}
	clients.stallAfter, clients.onStall = DefaultStallAfter, stalls.stalled
	if err := stalls.start(); err != nil {
		clients.close()
		return nil, err
	}
	cpu0, t0 := procstat.CPUSeconds(), time.Now()
	sr0, sw0 := procstat.Syscalls()
	rm0, em0 := wire.Recvmsgs()
	r.Clients = runClients(ctx, c, o, sc, benchRepo, d, want, clients.pull)
	wall := time.Since(t0).Seconds()
	r.CPUSeconds = procstat.CPUSeconds() - cpu0
	sr1, sw1 := procstat.Syscalls()
	rm1, em1 := wire.Recvmsgs()
	if r.ClientCPUSeconds, err = clients.close(); err != nil {
		return nil, err
	}
	r.StalledPulls = stalls.count.Load()
	// The peer-wire readers' recvmsg calls are not in syscr.
	r.ReadSyscalls, r.WriteSyscalls = sr1-sr0+rm1-rm0, sw1-sw0
	r.EmptyReads = em1 - em0
	// The clients share the cores.
	r.CPUBound = (r.CPUSeconds+r.ClientCPUSeconds)/wall > 0.8*float64(r.CPUCores)
	r.summarize()
	r.AllVerified = len(r.Failures) == 0
	for _, a := range c.Agents {
		r.BytesFromOrigins += a.Node().BytesFromOrigins()
		r.BytesFromPeers += a.Node().BytesFromPeers()
		r.BytesWasted += a.Node().BytesWasted()
		r.RequestsMoved += a.Node().RequestsMoved()
	}
	counted(r)

	if o.Baseline == "direct" {
		// The same clients, each capped at Rate, straight from the registry
		// (capped at UpstreamRate in all).
		dt, _, dfails := pullAll(ctx, len(c.Agents), func(int) string {
			return proto.V2BlobURL(c.Registry.URL(), benchRepo, d)
		}, want, o.Rate)
		r.Failures = append(r.Failures, dfails...)
		r.DirectSecondsP50, r.DirectSecondsMax = quantile(dt, 0.5), quantile(dt, 1)
		r.SpeedupP50 = r.DirectSecondsP50 / r.AgentSecondsP50
	}
	return r, nil
}

// benchRepo is the repository the bench's blob is pushed to.
const benchRepo = "bench/blob"

// pushBlob pushes the bench's random blob to the cluster's registry (and,
// with WarmOrigins, onto its origin); want checks a copy of it.
func pushBlob(ctx context.Context, c *cluster.Cluster, o SwarmOptions) (digest.Digest, copyCheck, error) {
	d, err := c.Registry.PushRandomBlob(ctx, benchRepo, int64(o.Size), 1)
	if err != nil {
		return "", copyCheck{}, err
	}
	want, err := randomBlobCheck(int64(o.Size), 1)
	if err != nil {
		return "", copyCheck{}, err
	}
	if o.WarmOrigins {
		if err := preheat(ctx, c, benchRepo, d); err != nil {
			return "", copyCheck{}, err
		}
	}
	return d, want, nil
}

// countUpstream zeroes the registry's counters and notes what the origins
// have sent (and handed out again) so far; the function it returns fills r
// with what the origins and the upstream sent since (and the process's peak
// RSS).
func countUpstream(c *cluster.Cluster, d digest.Digest) func(r *SwarmResult) {
	origins := func() (sent, lost int64) {
		for _, org := range c.Origins {
			sent += org.BytesSent()
			lost += org.PiecesLost()
		}
		return sent, lost
	}
	c.Registry.ResetCounts()
	sent0, lost0 := origins()
	return func(r *SwarmResult) {
		sent, lost := origins()
		r.OriginBytesSent, r.PiecesLost = sent-sent0, lost-lost0
		r.OriginSentOverF = float64(r.OriginBytesSent) / float64(r.BlobBytes)
		r.BytesFromUpstream = c.Registry.BytesSent()
		r.UpstreamBlobGets = c.Registry.BlobGets(d.String())
		r.PeakRSSBytes = procstat.PeakRSS()
	}
}

// newSwarmResult is the result of run o before it runs: what it is, and its
// bound.
func newSwarmResult(o SwarmOptions) *SwarmResult {
	r := &SwarmResult{Agents: o.Agents, Origins: o.Origins, BlobBytes: int64(o.Size), PieceBytes: int64(o.PieceSize),
		RateBps: int64(o.Rate), OriginRateBps: int64(o.OriginRate), UpstreamRateBps: int64(o.UpstreamRate),
		WarmOrigins: o.WarmOrigins, AllVerified: true, CPUCores: runtime.NumCPU(),
		SlowFraction: o.SlowFraction, LateFraction: o.LateFraction, ChurnFraction: o.ChurnFraction, ConnsPerTorrent: o.ConnsPerTorrent,
		RequestsPerPeer: o.RequestsPerPeer, MaxPeers: o.MaxPeers, Engine: o.Engine}
	if o.SlowFraction > 0 {
		r.SlowDivisor, r.SlowConns = o.SlowDivisor, o.SlowConns
	}
	if r.PieceBytes == 0 {
		r.PieceBytes = p2p.PieceLengthFor(r.BlobBytes)
	}
	// With one blob only the origin that owns it uploads.
	r.TMinSeconds = TMin(o.Agents, float64(o.Size), float64(o.Rate), float64(o.OriginRate), float64(o.UpstreamRate), !o.WarmOrigins)
	return r
}

// summarize fills the times and ratios from r.Clients (killed clients are
// not timed) and adds the clients' errors to r.Failures.
func (r *SwarmResult) summarize() {
	var times, ttfbs, over, onTime []float64
	for _, cr := range r.Clients {
		if cr.Error != "" {
			r.Failures = append(r.Failures, fmt.Sprintf("agent %d (%s): %s", cr.Agent, cr.Kind, cr.Error))
		}
		if cr.Kind == KindKilled {
			continue
		}
		times, ttfbs, over = append(times, cr.Seconds), append(ttfbs, cr.TTFBSeconds), append(over, cr.OverBound)
		if cr.Kind == KindOnTime {
			onTime = append(onTime, cr.OverBound)
		}
	}
	r.P50OverBound, r.MaxOverBound, r.OnTimeP50OverBound = quantile(over, 0.5), quantile(over, 1), quantile(onTime, 0.5)
	r.AgentSeconds = times
	r.AgentSecondsP50, r.AgentSecondsP90, r.AgentSecondsMax = quantile(times, 0.5), quantile(times, 0.9), quantile(times, 1)
	r.TTFBSecondsP50 = quantile(ttfbs, 0.5)
	r.P50OverTMin = r.AgentSecondsP50 / r.TMinSeconds
	r.MaxOverTMin = r.AgentSecondsMax / r.TMinSeconds
}

func preheat(ctx context.Context, c *cluster.Cluster, repo string, d digest.Digest) error {
	resp, err := httpGet(ctx, proto.MetainfoURL(c.Tracker.URL(), "bench/blob", d))
	if err != nil {
		return fmt.Errorf("preheat: %w", err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != 200 {
		return fmt.Errorf("preheat: %s %v", resp.Status, err)
	}
	_ = repo
	// The metainfo comes as soon as upstream answers: wait for the blob.
	for {
		for _, org := range c.Origins {
			if _, err := org.Store().Stat(d); err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("preheat: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func httpGet(ctx context.Context, url string) (*http.Response, error) {
	return httpGetWith(ctx, http.DefaultClient, url)
}

func httpGetWith(ctx context.Context, hc *http.Client, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return hc.Do(req)
}

// copyCheck is what every pulled copy must match: the blob's length and
// CRC-32C. The agents verified the sha256 before serving; the harness
// checks what reached each client with the CPU's CRC instruction (about
// 0.1 core-second per GiB) instead of a second sha256 per copy (0.6 per
// GiB here), which would take CPU from the swarm it measures on 2 cores.
type copyCheck struct {
	size int64
	crc  uint32
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// randomBlobCheck is the copyCheck of localregistry's random blob.
func randomBlobCheck(size int64, seed uint64) (copyCheck, error) {
	h := crc32.New(castagnoli)
	if _, err := io.Copy(h, localregistry.NewRandomReader(size, seed)); err != nil {
		return copyCheck{}, err
	}
	return copyCheck{size: size, crc: h.Sum32()}, nil
}

// pullAll starts n GETs at once and checks each body against want as it
// streams. clientRate > 0 caps each client's download.
func pullAll(ctx context.Context, n int, url func(int) string, want copyCheck, clientRate config.Rate) (secs, ttfb []float64, fails []string) {
	secs, ttfb = make([]float64, n), make([]float64, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			var err error
			secs[i], ttfb[i], err = pullOne(ctx, url(i), want, clientRate, nil)
			if err != nil {
				mu.Lock()
				fails = append(fails, fmt.Sprintf("client %d: %v", i, err))
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	return secs, ttfb, fails
}

// pullOne GETs url and checks the body against want as it streams, calling
// first (if set) when the first byte arrives. clientRate > 0 caps it.
func pullOne(ctx context.Context, url string, want copyCheck, clientRate config.Rate, first func()) (secs, ttfb float64, err error) {
	return pullOneWith(ctx, http.DefaultClient, url, want, clientRate, first)
}

// pullOneWith is pullOne through hc (a client that dials from another
// network namespace).
func pullOneWith(ctx context.Context, hc *http.Client, url string, want copyCheck, clientRate config.Rate, first func()) (secs, ttfb float64, err error) {
	t0 := time.Now()
	err = func() error {
		resp, err := httpGetWith(ctx, hc, url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", resp.Status)
		}
		var body io.Reader = resp.Body
		if clientRate > 0 {
			body = &limitedReader{r: body, l: rate.NewLimiter(rate.Limit(clientRate), 256<<10), ctx: ctx}
		}
		var crc uint32
		var got int64
		buf := make([]byte, 256<<10)
		for {
			k, err := body.Read(buf)
			if k > 0 && got == 0 {
				ttfb = time.Since(t0).Seconds()
				if first != nil {
					first()
				}
			}
			crc = crc32.Update(crc, castagnoli, buf[:k])
			got += int64(k)
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
		if got != want.size || crc != want.crc {
			return fmt.Errorf("body of %d bytes, CRC-32C %08x: want %d bytes, %08x", got, crc, want.size, want.crc)
		}
		return nil
	}()
	return time.Since(t0).Seconds(), ttfb, err
}

type limitedReader struct {
	r   io.Reader
	l   *rate.Limiter
	ctx context.Context
}

func (l *limitedReader) Read(p []byte) (int, error) {
	p = p[:min(len(p), l.l.Burst())]
	n, err := l.r.Read(p)
	if n > 0 {
		if werr := l.l.WaitN(l.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}

func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(q*float64(len(s)-1) + 0.5)
	return s[min(i, len(s)-1)]
}

func numCPU() int       { return runtime.NumCPU() }
func goVersion() string { return runtime.Version() }
