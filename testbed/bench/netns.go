package bench

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/agent"
	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/internal/procstat"
	"github.com/shoal-dev/shoal/proto"
	"github.com/shoal-dev/shoal/testbed/cluster"
	"github.com/shoal-dev/shoal/testbed/netlab"
)

// The agent's ports inside its own namespace: the registry API on the
// namespace's loopback (the node's runtime is local), BitTorrent and admin
// on its bridge address.
const (
	nsRegistryPort = 7650
	nsP2PPort      = 7651
	nsAdminPort    = 7652
)

// NetnsCheck says why `bench swarm --netns` cannot run here (nil: it can).
func NetnsCheck() error { return netlab.Check() }

// swarmNetns is Swarm on an emulated network: every agent is its own
// process in its own network namespace, its links capped by tc and
// delayed by RTT/2 on receipt (netlab); the registry, tracker, build-index
// and origins run in this process on the bridge's addresses (the origins'
// upload capped by their token bucket, as in the loopback run); the
// timed client of agent i dials from agent i's namespace to the agent's
// registry API on that namespace's 127.0.0.1.
func swarmNetns(ctx context.Context, o SwarmOptions) (_ *SwarmResult, err error) {
	if o.LateFraction > 0 || o.ChurnFraction > 0 || o.Baseline != "" {
		return nil, errors.New("bench: --netns runs on-time agents only (no --late, --churn or --baseline)")
	}
	if o.Binary == "" {
		if o.Binary, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("bench: the shoal binary for the agents: %w", err)
		}
	}
	sc := newScenario(o)
	lab, err := netlab.New(ctx, netlab.Options{RTT: o.RTT, MTU: o.MTU, Log: o.Log})
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := lab.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("bench: removing the network: %w", cerr))
		}
	}()
	originIPs := make([]string, o.Origins)
	for i := range originIPs {
		ip, err := lab.CoreAddr(ctx, i)
		if err != nil {
			return nil, err
		}
		originIPs[i] = ip.String()
	}
	c, err := cluster.Start(cluster.Options{Dir: o.Dir, Agents: 0, Origins: o.Origins,
		OriginRate: o.OriginRate, UpstreamRate: o.UpstreamRate, PieceLength: o.PieceSize, Log: o.Log,
		TrackerConfig: o.trackerConfig,
		IP: func(role string, i int) string {
			if role == "origin" {
				return originIPs[i]
			}
			return lab.Gateway.String()
		}})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	d, want, err := pushBlob(ctx, c, o)
	if err != nil {
		return nil, err
	}

	agents := make([]*nsAgent, o.Agents)
	defer func() {
		for _, a := range agents {
			if a != nil {
				a.stop()
			}
		}
	}()
	for i := range agents {
		r := int64(o.agentRate(sc, i))
		h, err := lab.AddHost(ctx, i, r, r)
		if err != nil {
			return nil, err
		}
		if agents[i], err = startNsAgent(ctx, o, c, h, sc, i); err != nil {
			return nil, err
		}
	}
	for _, a := range agents {
		if err := waitUpWith(ctx, a.client, a.registryURL()+proto.PatternV2+"/", a.exited); err != nil {
			return nil, fmt.Errorf("agent %d: %w (stderr: %s)", a.i, err, a.stderr.String())
		}
	}
	r := newSwarmResult(o)
	r.Netns, r.RTTSeconds, r.MTU = true, o.RTT.Seconds(), cmp.Or(o.MTU, 1500)
	if o.RTT > 0 {
		r.Delay = "nfqueue"
	}
	// What the packets really see, before the run loads the links.
	r.MeasuredRTTSeconds = connectRTT(agents[0].host.NS, net.JoinHostPort(lab.Gateway.String(), portOf(c.Tracker.URL())))
	if len(agents) > 1 {
		r.MeasuredPeerRTTSeconds = connectRTT(agents[0].host.NS, net.JoinHostPort(agents[1].host.IP.String(), strconv.Itoa(nsAdminPort)))
	}

	counted := countUpstream(c, d)
	cpu0, host0, t0 := procstat.CPUSeconds(), hostCPUSeconds(), time.Now()
	agentCPU0 := make([]float64, len(agents))
	for i, a := range agents {
		agentCPU0[i] = procCPUSeconds(a.pid())
	}
	r.Clients = runNsClients(ctx, o, sc, agents, benchRepo, d, want)
	wall := time.Since(t0).Seconds()
	r.CPUSeconds = procstat.CPUSeconds() - cpu0
	for i, a := range agents {
		r.AgentCPUSeconds += procCPUSeconds(a.pid()) - agentCPU0[i]
	}
	r.CPUSeconds += r.AgentCPUSeconds
	r.HostCPUSeconds = hostCPUSeconds() - host0
	r.CPUBound = max(r.CPUSeconds, r.HostCPUSeconds)/wall > 0.8*float64(r.CPUCores)

	r.summarize()
	for _, a := range agents {
		m, err := a.metrics(ctx)
		if err != nil {
			r.Failures = append(r.Failures, fmt.Sprintf("agent %d: metrics: %v", a.i, err))
			continue
		}
		r.BytesFromOrigins += int64(m[`shoal_p2p_received_bytes_total{source="origin"}`])
		r.BytesFromPeers += int64(m[`shoal_p2p_received_bytes_total{source="peer"}`])
		r.BytesWasted += int64(m["shoal_p2p_wasted_bytes_total"])
		r.RequestsMoved += int64(m["shoal_p2p_requests_moved_total"])
		r.AgentPeakRSSBytes = max(r.AgentPeakRSSBytes, procPeakRSS(a.pid()))
	}
	counted(r)
	r.DelayedPackets = lab.DelayedPackets()
	if err := lab.DelayErr(); err != nil {
		r.Failures = append(r.Failures, err.Error())
	}
	r.AllVerified = len(r.Failures) == 0
	return r, nil
}

// runNsClients starts every agent's client at once, each from its agent's
// namespace, and times them against the same bounds as runClients.
func runNsClients(ctx context.Context, o SwarmOptions, s scenario, agents []*nsAgent, repo string, d digest.Digest, want copyCheck) []ClientResult {
	res := make([]ClientResult, len(agents))
	f := float64(o.Size)
	upstreamEnd := 0.0
	if !o.WarmOrigins {
		upstreamEnd = f / float64(o.UpstreamRate)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, a := range agents {
		res[i] = ClientResult{Agent: i, Kind: KindOnTime, RateBps: int64(o.agentRate(s, i))}
		wg.Go(func() {
			<-start
			secs, ttfb, err := pullOneWith(ctx, a.client, proto.V2BlobURL(a.registryURL(), repo, d), want, 0, nil)
			r := &res[i]
			r.Seconds, r.TTFBSeconds = secs, ttfb
			if err != nil {
				r.Error = err.Error()
			}
			r.BoundSeconds = max(f/float64(r.RateBps), upstreamEnd, f/float64(o.OriginRate))
			r.OverBound = r.Seconds / r.BoundSeconds
		})
	}
	close(start)
	wg.Wait()
	return res
}

// nsAgent is one `shoal agent` process in its own namespace.
type nsAgent struct {
	i      int
	host   *netlab.Host
	cmd    *exec.Cmd
	client *http.Client // dials from the agent's namespace
	stderr tailBuffer
	exited chan error    // gets the process's exit once
	done   chan struct{} // closed when it has exited
}

func startNsAgent(ctx context.Context, o SwarmOptions, c *cluster.Cluster, h *netlab.Host, sc scenario, i int) (*nsAgent, error) {
	ac := agent.Config{Root: filepath.Join(o.Dir, fmt.Sprintf("agent%d", i)), Trackers: []string{c.Tracker.URL()},
		BuildIndex: []string{c.BuildIndex.URL()}, NodeID: fmt.Sprintf("agent%d", i), LogLevel: "warn",
		Listen:      net.JoinHostPort("127.0.0.1", strconv.Itoa(nsRegistryPort)),
		AdminListen: net.JoinHostPort(h.IP.String(), strconv.Itoa(nsAdminPort))}
	for _, org := range c.Origins {
		ac.Origins = append(ac.Origins, org.URL())
	}
	ac.P2P.Listen = net.JoinHostPort(h.IP.String(), strconv.Itoa(nsP2PPort))
	// tc is the only cap: the agents' token buckets stay off. They keep
	// the requests per peer a download cap of the link's rate would give
	// them (what an operator who set the cap gets).
	ac.P2P.UploadRate, ac.P2P.DownloadRate = 0, 0
	ac.P2P.RequestsPerPeer = p2p.RequestsPerPeerFor(o.agentRate(sc, i), o.Engine)
	if o.RequestsPerPeer > 0 {
		ac.P2P.RequestsPerPeer = o.RequestsPerPeer
	}
	if o.Engine != "" {
		ac.P2P.Engine = o.Engine
	}
	if n := o.agentConns(sc, i); n > 0 {
		ac.P2P.ConnsPerTorrent = n
	}
	b, err := config.Encode(ac)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(o.Dir, fmt.Sprintf("agent%d.toml", i))
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		return nil, err
	}
	a := &nsAgent{i: i, host: h, exited: make(chan error, 1), done: make(chan struct{}),
		client: &http.Client{Transport: &http.Transport{DialContext: netlab.DialContext(h.NS), DisableCompression: true}}}
	// `ip netns exec` execs the agent: the pid is the agent's own.
	a.cmd = exec.Command("ip", "netns", "exec", h.NS, o.Binary, "agent", "--config", cfgPath)
	a.cmd.Stderr = &a.stderr
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("agent %d: start %s: %w", i, o.Binary, err)
	}
	go func() {
		err := a.cmd.Wait()
		a.exited <- err
		close(a.done)
	}()
	return a, nil
}

func (a *nsAgent) registryURL() string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(nsRegistryPort))
}

func (a *nsAgent) pid() int { return a.cmd.Process.Pid }

// stop interrupts the agent and kills it if it has not left in 10 s.
func (a *nsAgent) stop() {
	_ = a.cmd.Process.Signal(os.Interrupt)
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
	a.client.CloseIdleConnections()
}

// metrics reads the agent's Prometheus text: "name{labels}" -> value.
func (a *nsAgent) metrics(ctx context.Context) (map[string]float64, error) {
	resp, err := httpGetWith(ctx, a.client, "http://"+net.JoinHostPort(a.host.IP.String(), strconv.Itoa(nsAdminPort))+"/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		k := strings.LastIndexByte(line, ' ')
		if k < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[k+1:], 64); err == nil {
			m[line[:k]] = v
		}
	}
	return m, sc.Err()
}

// connectRTT is the best of three TCP connects to addr from namespace ns
// (0 if none succeeds).
func connectRTT(ns, addr string) float64 {
	best := 0.0
	dial := netlab.DialContext(ns)
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		t0 := time.Now()
		c, err := dial(ctx, "tcp", addr)
		cancel()
		if err != nil {
			continue
		}
		if s := time.Since(t0).Seconds(); best == 0 || s < best {
			best = s
		}
		c.Close()
	}
	return best
}

func portOf(u string) string {
	ap, err := netip.ParseAddrPort(strings.TrimPrefix(strings.TrimPrefix(u, "http://"), "https://"))
	if err != nil {
		return "0"
	}
	return strconv.Itoa(int(ap.Port()))
}

// procCPUSeconds is pid's user + system CPU time (0 once it is gone).
func procCPUSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces: the fields start after its ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64) // field 14 of the whole line
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clockTicks
}

// clockTicks is USER_HZ, 100 on every Linux port Go supports.
const clockTicks = 100

// hostCPUSeconds is the machine's busy CPU time so far (every process and
// the kernel's softirq work, where tc, veth and the bridge spend theirs).
func hostCPUSeconds() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy float64
	for k, v := range f[1:] {
		// user nice system idle iowait irq softirq steal; guest time is
		// already in user.
		if k == 3 || k == 4 || k > 7 {
			continue
		}
		x, _ := strconv.ParseFloat(v, 64)
		busy += x
	}
	return busy / clockTicks
}

// procPeakRSS is pid's VmHWM in bytes.
func procPeakRSS(pid int) int64 { return procstat.StatusBytes(strconv.Itoa(pid), "VmHWM") }
