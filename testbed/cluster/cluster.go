// Package cluster starts a whole Shoal cluster in one process on loopback: a
// real upstream registry, a tracker, origins and agents, each agent on its
// own 127.0.0.x address. `shoal demo`, `shoal bench` and the end-to-end tests
// use it.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/agent"
	"github.com/shoal-dev/shoal/buildindex"
	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/internal/tlsconf"
	"github.com/shoal-dev/shoal/internal/upstream"
	"github.com/shoal-dev/shoal/origin"
	"github.com/shoal-dev/shoal/testbed/localregistry"
	"github.com/shoal-dev/shoal/tracker"
)

// Options shape a cluster.
type Options struct {
	Dir     string // all state goes below it
	Agents  int
	Origins int
	// DefaultPorts binds each role's default ports (tracker 7600 on
	// 127.0.0.1, build-index 7620 on 127.0.0.1, origins on 127.0.0.(2+i),
	// agents on 127.0.0.(10+i));
	// otherwise the kernel picks free ports, so clusters can coexist.
	DefaultPorts bool
	// IP, if set, is the address the tracker ("tracker", 0), build-index
	// ("buildindex", 0) and origin i ("origin", i) bind instead of their
	// loopback one (`bench swarm --netns`: addresses on a bridge).
	IP func(role string, i int) string
	// AgentRate caps each agent's upload and download; OriginRate each
	// origin's upload; UpstreamRate the registry's upload. 0 = no cap.
	AgentRate, OriginRate, UpstreamRate config.Rate
	PieceLength                         config.ByteSize
	// UpstreamURL, if set, is used instead of starting a local registry.
	UpstreamURL string
	// AgentUpstream gives the agents the upstream registry as [[upstream]]:
	// the last resort of their fallback chain when every origin is down.
	AgentUpstream bool
	// AgentConfig, if set, adjusts agent i's config before it starts.
	AgentConfig func(i int, c *agent.Config)
	// OriginConfig, if set, adjusts origin i's config before it starts.
	OriginConfig func(i int, c *origin.Config)
	// TrackerConfig, if set, adjusts the tracker's config.
	TrackerConfig func(c *tracker.Config)
	// BuildIndexConfig, if set, adjusts the build-index's config.
	BuildIndexConfig func(c *buildindex.Config)
	// TLS, if set, is the [tls] table of each component (role "tracker",
	// "origin", "buildindex" or "agent", and its index), and every URL
	// between components is https. The agents' registry APIs stay plain
	// HTTP: they listen on loopback.
	TLS func(role string, i int) tlsconf.Config
	Log *slog.Logger
}

// Cluster is a running cluster.
type Cluster struct {
	Registry *localregistry.Registry // nil with Options.UpstreamURL
	Tracker  *tracker.Server
	// BuildIndex resolves tags for the agents.
	BuildIndex *buildindex.Server
	Origins    []*origin.Origin
	Agents     []*agent.Agent
	// UpstreamHost is the upstream registry's host:port; the default
	// namespace, so repositories need no host prefix.
	UpstreamHost string

	cancel    context.CancelFunc
	ctx       context.Context
	agentCfgs []agent.Config
	biCfg     buildindex.Config
	replaced  int // agents replaced so far (fresh cache directories)
	log       *slog.Logger
	stops     map[any]func() // per component, for tests that kill one
	wg        sync.WaitGroup
	errMu     sync.Mutex
	errs      []error
}

// MaxAgents is how many agents a cluster can address on loopback.
const MaxAgents = 240 + 254*254

// AgentIP is the loopback address of agent i: 127.0.0.10 to 127.0.0.249
// for the first 240, then 127.0.1.1 on (each agent its own address, as the
// tracker and bans tell peers apart by address).
func AgentIP(i int) string {
	if i < 240 {
		return fmt.Sprintf("127.0.0.%d", 10+i)
	}
	j := i - 240
	return fmt.Sprintf("127.0.%d.%d", 1+j/254, 1+j%254)
}

// OriginIP is the loopback address of origin i.
func OriginIP(i int) string { return fmt.Sprintf("127.0.0.%d", 2+i) }

// Start brings the cluster up; Close takes it down.
func Start(opts Options) (*Cluster, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	for attempt := 1; ; attempt++ {
		c, err := start(opts)
		// A free port found by freeAddr is released before its component
		// binds it; another test process may take it meanwhile. Pick again.
		if err == nil || opts.DefaultPorts || attempt == 3 || !errors.Is(err, syscall.EADDRINUSE) {
			return c, err
		}
		opts.Log.Debug("cluster: a port was taken meanwhile; starting again", "err", err)
	}
}

func start(opts Options) (_ *Cluster, err error) {
	if opts.Agents < 0 || opts.Agents > MaxAgents {
		return nil, fmt.Errorf("cluster: agents must be 0..%d, got %d", MaxAgents, opts.Agents)
	}
	if opts.Origins < 1 || opts.Origins > 8 {
		return nil, fmt.Errorf("cluster: origins must be 1..8, got %d", opts.Origins)
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cluster{cancel: cancel, ctx: ctx, log: opts.Log, stops: map[any]func(){}}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	ipOf := func(role string, i int, loopback string) string {
		if opts.IP != nil {
			return opts.IP(role, i)
		}
		return loopback
	}
	addr := func(ip string, def int) (string, error) {
		if opts.DefaultPorts {
			return net.JoinHostPort(ip, strconv.Itoa(def)), nil
		}
		return freeAddr(ip)
	}

	upURL := opts.UpstreamURL
	if upURL == "" {
		reg, err := localregistry.Start(filepath.Join(opts.Dir, "registry"), "127.0.0.1:0", int64(opts.UpstreamRate), opts.Log.With("role", "registry"))
		if err != nil {
			return nil, err
		}
		c.Registry = reg
		c.run(reg, ctx, reg.Serve)
		upURL = reg.URL()
	}
	pu, err := url.Parse(upURL)
	if err != nil || pu.Host == "" {
		return nil, fmt.Errorf("cluster: upstream URL %q: want http(s)://host:port", upURL)
	}
	up := upstream.Config{Host: pu.Host, URL: upURL}
	c.UpstreamHost = pu.Host

	// Every address is fixed before anything starts: origins announce to the
	// tracker, and the tracker asks the origins.
	trackerAddr, err := addr(ipOf("tracker", 0, "127.0.0.1"), 7600)
	if err != nil {
		return nil, err
	}
	scheme := "http://"
	tlsFor := func(string, int) tlsconf.Config { return tlsconf.Config{} }
	if opts.TLS != nil {
		scheme, tlsFor = "https://", opts.TLS
	}
	trackerURL := scheme + trackerAddr
	var ocfgs []origin.Config
	var originURLs []string
	for i := range opts.Origins {
		ip := ipOf("origin", i, OriginIP(i))
		httpAddr, err := addr(ip, 7610)
		if err != nil {
			return nil, err
		}
		p2pAddr, err := addr(ip, 7611)
		if err != nil {
			return nil, err
		}
		oc := origin.Config{
			Listen:          httpAddr,
			Root:            filepath.Join(opts.Dir, fmt.Sprintf("origin%d", i)),
			Trackers:        []string{trackerURL},
			PieceLength:     opts.PieceLength,
			DefaultUpstream: up.Host,
			Upstreams:       []upstream.Config{up},
		}
		oc.P2P.Listen = p2pAddr
		oc.P2P.UploadRate = opts.OriginRate
		oc.TLS = tlsFor("origin", i)
		if opts.OriginConfig != nil {
			opts.OriginConfig(i, &oc)
		}
		oc.ApplyDefaults()
		if err := oc.Validate(); err != nil {
			return nil, fmt.Errorf("origin %d: %w", i, err)
		}
		ocfgs = append(ocfgs, oc)
		originURLs = append(originURLs, scheme+httpAddr)
	}

	tc := tracker.Config{Listen: trackerAddr, Origins: originURLs, TLS: tlsFor("tracker", 0)}
	if opts.TrackerConfig != nil {
		opts.TrackerConfig(&tc)
	}
	tc.ApplyDefaults()
	if c.Tracker, err = started[*tracker.Server](c, ctx)(tracker.New(tc, opts.Log.With("role", "tracker"))); err != nil {
		return nil, err
	}

	for i, oc := range ocfgs {
		o, err := origin.New(oc, opts.Log.With("role", "origin", "origin", i))
		if err != nil {
			return nil, fmt.Errorf("origin %d: %w", i, err)
		}
		c.Origins = append(c.Origins, o)
		c.run(o, ctx, o.Run)
	}

	biAddr, err := addr(ipOf("buildindex", 0, "127.0.0.1"), 7620)
	if err != nil {
		return nil, err
	}
	bc := buildindex.Config{Listen: biAddr, Root: filepath.Join(opts.Dir, "buildindex"), Origins: originURLs, TLS: tlsFor("buildindex", 0)}
	if opts.BuildIndexConfig != nil {
		opts.BuildIndexConfig(&bc)
	}
	bc.ApplyDefaults()
	if err := bc.Validate(); err != nil {
		return nil, fmt.Errorf("build-index: %w", err)
	}
	c.biCfg = bc
	if c.BuildIndex, err = started[*buildindex.Server](c, ctx)(buildindex.New(bc, opts.Log.With("role", "buildindex"))); err != nil {
		return nil, err
	}

	for i := range opts.Agents {
		ip := AgentIP(i)
		ac := agent.Config{Root: filepath.Join(opts.Dir, fmt.Sprintf("agent%d", i)), Trackers: []string{trackerURL}, Origins: originURLs,
			BuildIndex: []string{c.BuildIndex.URL()}, NodeID: fmt.Sprintf("agent%d", i)}
		var err error
		if ac.Listen, err = addr(ip, 7650); err != nil {
			return nil, err
		}
		if ac.P2P.Listen, err = addr(ip, 7651); err != nil {
			return nil, err
		}
		if ac.AdminListen, err = addr(ip, 7652); err != nil {
			return nil, err
		}
		ac.P2P.UploadRate, ac.P2P.DownloadRate = opts.AgentRate, opts.AgentRate
		ac.TLS = tlsFor("agent", i)
		if opts.AgentUpstream {
			ac.Upstreams = []upstream.Config{up}
		}
		if opts.AgentConfig != nil {
			opts.AgentConfig(i, &ac)
		}
		ac.ApplyDefaults()
		if err := ac.Validate(); err != nil {
			return nil, fmt.Errorf("agent %d: %w", i, err)
		}
		a, err := agent.New(ac, opts.Log.With("role", "agent", "agent", i))
		if err != nil {
			return nil, fmt.Errorf("agent %d: %w", i, err)
		}
		c.Agents = append(c.Agents, a)
		c.agentCfgs = append(c.agentCfgs, ac)
		c.run(a, ctx, a.Run)
	}
	return c, nil
}

// freeAddr finds a free port on ip, below the kernel's ephemeral range: the
// port is released before the component binds it, and a port from the
// ephemeral range could meanwhile become the source port of one of the
// cluster's own outgoing connections.
func freeAddr(ip string) (string, error) {
	lo := ephemeralLow()
	for range 100 {
		port := 10000 + mrand.IntN(lo-10000)
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			continue
		}
		addr := ln.Addr().String()
		ln.Close()
		return addr, nil
	}
	return "", fmt.Errorf("cluster: no free port on %s below %d", ip, lo)
}

// ephemeralLow is the first port the kernel hands out for outgoing
// connections (32768 if unknown).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil || lo <= 11000 {
		return 32768
	}
	return lo
}

// run starts component k under its own context (a child of ctx), so that
// Stop can take it down alone.
// started runs a component that New built, unless building it failed:
// started[*tracker.Server](c, ctx)(tracker.New(...)).
func started[R interface{ Run(context.Context) error }](c *Cluster, ctx context.Context) func(R, error) (R, error) {
	return func(r R, err error) (R, error) {
		if err == nil {
			c.run(r, ctx, r.Run)
		}
		return r, err
	}
}

func (c *Cluster) run(k any, ctx context.Context, f func(context.Context) error) {
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	c.stops[k] = func() { cancel(); <-done }
	c.wg.Go(func() {
		defer close(done)
		if err := f(cctx); err != nil && !errors.Is(err, context.Canceled) {
			c.errMu.Lock()
			c.errs = append(c.errs, err)
			c.errMu.Unlock()
		}
	})
}

// Stop takes one component down (an origin, an agent, the tracker or the
// registry) and waits until it has stopped: its listeners are closed and it
// has left every swarm.
func (c *Cluster) Stop(component any) {
	if stop, ok := c.stops[component]; ok {
		stop()
	}
}

// RestartAgent stops agent i and starts a new one with the same config (same
// registry address, same cache directory), as a node's agent restarting
// would. The BitTorrent port is a fresh one: the old client's outgoing
// connections were made from its listening port and may still hold it.
func (c *Cluster) RestartAgent(i int) (*agent.Agent, error) {
	c.Stop(c.Agents[i])
	ac := c.agentCfgs[i]
	host, _, _ := net.SplitHostPort(ac.P2P.Listen)
	var err error
	if ac.P2P.Listen, err = freeAddr(host); err != nil {
		return nil, err
	}
	return c.startAgent(i, ac)
}

// ReplaceAgent stops agent i and starts a fresh node in its place, as a
// replaced spot instance: same address and limits, an empty cache, new
// ports.
func (c *Cluster) ReplaceAgent(i int) (*agent.Agent, error) {
	c.Stop(c.Agents[i])
	ac := c.agentCfgs[i]
	c.replaced++
	ac.Root = fmt.Sprintf("%s-r%d", ac.Root, c.replaced)
	host, _, _ := net.SplitHostPort(ac.P2P.Listen)
	for _, a := range []*string{&ac.Listen, &ac.P2P.Listen, &ac.AdminListen} {
		var err error
		if *a, err = freeAddr(host); err != nil {
			return nil, err
		}
	}
	return c.startAgent(i, ac)
}

func (c *Cluster) startAgent(i int, ac agent.Config) (*agent.Agent, error) {
	c.agentCfgs[i] = ac
	a, err := agent.New(ac, c.log.With("role", "agent", "agent", i))
	if err != nil {
		return nil, fmt.Errorf("agent %d: %w", i, err)
	}
	c.Agents[i] = a
	c.run(a, c.ctx, a.Run)
	return a, nil
}

// RestartBuildIndex stops the build-index and starts a new one with the
// same config (same address and root), as a restart of its process would.
func (c *Cluster) RestartBuildIndex() (*buildindex.Server, error) {
	c.Stop(c.BuildIndex)
	var bi *buildindex.Server
	var err error
	for attempt := 0; attempt < 50; attempt++ { // the old listener's port may linger a moment
		if bi, err = buildindex.New(c.biCfg, c.log.With("role", "buildindex")); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("restart build-index: %w", err)
	}
	c.BuildIndex = bi
	c.run(bi, c.ctx, bi.Run)
	return bi, nil
}

// Close stops everything and waits for it.
func (c *Cluster) Close() error {
	c.cancel()
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		return errors.New("cluster: shutdown timed out")
	}
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return errors.Join(c.errs...)
}
