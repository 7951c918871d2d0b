package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/testbed/bench"
)

const benchUsage = `Usage:
  shoal bench standard [--out DIR] [--scale K]   the standard set -> DIR/results.json, DIR/results.svg
  shoal bench scale [--out DIR] [--scale K] [--only N] [--only-size F]   64-256 agents, warm, U=10R, scenarios
                                                 -> DIR/scale.json, DIR/scale.svg
  shoal bench swarm --agents N --size F --rate R [--origin-rate U] [--upstream-rate U]
                    [--origins K] [--piece-size P] [--warm-origins] [--baseline direct] [--json]
                    [--slow 0.25 [--slow-divisor 4]] [--late 0.25] [--churn 0.1] [--conns C]
                    [--netns [--rtt 20ms] [--mtu 9000]]   agents as processes in network namespaces (root, iproute2, iptables)
                    [--stall-dump DIR]   goroutines and TCP counters when a pull first goes 10 s without a byte
  shoal bench single [--size 256MiB] [--rate R] [--json]   cold pull through one agent vs direct
  shoal bench warm [--size 256MiB] [--reps 5] [--json]      cached blob: agent vs registry throughput
  shoal bench memory [--size 1GiB] [--json]                 agent process private memory while streaming
  shoal bench tracker [--duration 3s] [--json]              announces/s on one core, p99 latency
  shoal bench floor [--size 1GiB] [--json]                  this machine's CPU per GiB for the steps every delivered byte takes
` + benchSimUsage

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "standard", "scale":
			return runBenchStandard(ctx, args[0], args[1:], stdout, stderr)
		case "single", "warm", "memory", "tracker", "floor":
			return runBenchTarget(ctx, args[0], args[1:], stdout, stderr)
		case "sim":
			return runBenchSim(ctx, args[1:], stdout, stderr)
		}
	}
	if len(args) == 0 || args[0] != "swarm" {
		fmt.Fprint(stderr, benchUsage)
		return usageError{errors.New("want a benchmark name: swarm, standard, scale, single, warm, memory, tracker, floor or sim")}
	}
	fs := flag.NewFlagSet("bench swarm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o bench.SwarmOptions
	fs.IntVar(&o.Agents, "agents", 8, "agents pulling at once (each on its own 127.0.0.x)")
	fs.IntVar(&o.Origins, "origins", 1, "origins")
	size := fs.String("size", "256MiB", "blob size")
	piece := fs.String("piece-size", "auto", `metainfo piece length ("auto": the origin's choice by blob size)`)
	rate := fs.String("rate", "25MB/s", "each agent's upload and download cap")
	originRate := fs.String("origin-rate", "", "each origin's upload cap (default: --rate)")
	upstreamRate := fs.String("upstream-rate", "", "the upstream registry's upload cap (default: --origin-rate)")
	fs.BoolVar(&o.WarmOrigins, "warm-origins", false, "preheat the origins before timing")
	fs.Float64Var(&o.SlowFraction, "slow", 0, "fraction of the agents on slow links (uneven links)")
	fs.Float64Var(&o.SlowDivisor, "slow-divisor", 4, "slow agents' links are --rate divided by this")
	fs.Float64Var(&o.LateFraction, "late", 0, "fraction of the agents that start when the others are half done")
	fs.IntVar(&o.ConnsPerTorrent, "conns", 0, "every agent's p2p.conns_per_torrent (0: the default)")
	fs.IntVar(&o.SlowConns, "slow-conns", 0, "the --slow agents' p2p.conns_per_torrent (0: as the others')")
	fs.IntVar(&o.MaxPeers, "max-peers", 0, "the tracker's max_peers (0: the default)")
	fs.StringVar(&o.Engine, "engine", "", `every agent's p2p.engine ("library" or "shoal"; empty: the default)`)
	fs.IntVar(&o.RequestsPerPeer, "requests-per-peer", 0, "every agent's p2p.requests_per_peer (0: the default; with --netns, what a download cap of --rate gives)")
	fs.Float64Var(&o.ChurnFraction, "churn", 0, "fraction of the agents killed mid-pull and replaced by fresh ones")
	fs.StringVar(&o.Baseline, "baseline", "", `"direct": also time every client pulling straight from the registry`)
	fs.BoolVar(&o.Netns, "netns", false, "run each agent as its own process in its own network namespace, links capped by tc (needs root, iproute2, iptables)")
	fs.IntVar(&o.MTU, "mtu", 0, "with --netns: every link's MTU (0: 1500; 9000: jumbo frames, fewer packets to emulate)")
	fs.DurationVar(&o.RTT, "rtt", 0, "with --netns: the round trip between any two nodes (each packet waits half of it where it is received)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	dir := fs.String("dir", "", "state directory (default: temporary)")
	verbose := fs.Bool("v", false, "log every component to stderr")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run (go tool pprof) to this file")
	fs.StringVar(&o.StallDump, "stall-dump", "", "when a pull first goes 10 s without a byte, write both processes' goroutines and the kernel's TCP counters to this directory")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	var err error
	parse := func(flagName, v string, dst *config.Rate) {
		if err == nil && v != "" {
			if *dst, err = config.ParseRate(v); err != nil {
				err = usageError{fmt.Errorf("--%s: %w", flagName, err)}
			}
		}
	}
	parse("rate", *rate, &o.Rate)
	parse("origin-rate", *originRate, &o.OriginRate)
	parse("upstream-rate", *upstreamRate, &o.UpstreamRate)
	if err != nil {
		return err
	}
	if o.Size, err = config.ParseByteSize(*size); err != nil || o.Size < 1 {
		return usageError{fmt.Errorf("--size: %v", err)}
	}
	if *piece != "auto" {
		if o.PieceSize, err = config.ParseByteSize(*piece); err != nil {
			return usageError{fmt.Errorf("--piece-size: %w", err)}
		}
	}
	if o.Baseline != "" && o.Baseline != "direct" {
		return usageError{fmt.Errorf("--baseline: want \"direct\", got %q", o.Baseline)}
	}
	if o.Rate <= 0 {
		return usageError{errors.New("--rate: must be positive")}
	}
	if o.RTT < 0 || (o.RTT > 0 && !o.Netns) {
		return usageError{errors.New("--rtt: wants --netns and a duration >= 0")}
	}
	if o.MTU != 0 && !o.Netns {
		return usageError{errors.New("--mtu: wants --netns")}
	}
	if o.Netns {
		if o.LateFraction > 0 || o.ChurnFraction > 0 || o.Baseline != "" {
			return usageError{errors.New("--netns: runs on-time agents only (no --late, --churn or --baseline)")}
		}
		if err := bench.NetnsCheck(); err != nil {
			return fmt.Errorf("--netns: %w", err)
		}
	}
	o.ApplyDefaults()
	o.Log = commandLog(*verbose, stderr)
	var cleanup func()
	if o.Dir, cleanup, err = stateDir(*dir, "shoal-bench-"); err != nil {
		return err
	}
	defer cleanup()
	if *cpuProfile != "" {
		// Where a CPU-bound run's time goes: every component is in this process.
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	r, err := bench.Swarm(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
		if err := printJSON(stdout, r); err != nil {
			return err
		}
	} else {
		mib := func(n int64) float64 { return float64(n) / (1 << 20) }
		fmt.Fprintf(stdout, "%d agents, %.0f MiB blob, agents capped at %s, origin at %s, upstream at %s (%s origins)\n",
			r.Agents, mib(r.BlobBytes), o.Rate, o.OriginRate, o.UpstreamRate, map[bool]string{true: "warm", false: "cold"}[o.WarmOrigins])
		fmt.Fprintf(stdout, "T_min %.2f s; agents p50 %.2f s (%.2fx), p90 %.2f s, max %.2f s (%.2fx); first byte p50 %.2f s\n",
			r.TMinSeconds, r.AgentSecondsP50, r.P50OverTMin, r.AgentSecondsP90, r.AgentSecondsMax, r.MaxOverTMin, r.TTFBSecondsP50)
		fmt.Fprintf(stdout, "bytes: upstream %.0f MiB (%d GETs), origins sent %.0f MiB (%.2f F), agents got %.0f MiB from origins, %.0f MiB from peers, %.0f MiB wasted\n",
			mib(r.BytesFromUpstream), r.UpstreamBlobGets, mib(r.OriginBytesSent), r.OriginSentOverF, mib(r.BytesFromOrigins), mib(r.BytesFromPeers), mib(r.BytesWasted))
		fmt.Fprintf(stdout, "cpu %.1f core-seconds on %d cores, the clients' process %.1f more (cpu_bound: %v), peak RSS %.0f MiB, verified: %v\n",
			r.CPUSeconds, r.CPUCores, r.ClientCPUSeconds, r.CPUBound, mib(r.PeakRSSBytes), r.AllVerified)
		if r.Netns {
			fmt.Fprintf(stdout, "netns: RTT %s asked, connect RTT %.1f ms to the tracker, %.1f ms to a peer; %d packets delayed; machine busy %.1f core-seconds; agent peak RSS %.0f MiB\n",
				o.RTT, r.MeasuredRTTSeconds*1e3, r.MeasuredPeerRTTSeconds*1e3, r.DelayedPackets, r.HostCPUSeconds, mib(r.AgentPeakRSSBytes))
		}
		if o.SlowFraction > 0 || o.LateFraction > 0 || o.ChurnFraction > 0 {
			fmt.Fprintf(stdout, "each client over its own bound: p50 %.2fx, max %.2fx; on-time clients p50 %.2fx (slow %.2f at /%g, late %.2f, churn %.2f)\n",
				r.P50OverBound, r.MaxOverBound, r.OnTimeP50OverBound, o.SlowFraction, o.SlowDivisor, o.LateFraction, o.ChurnFraction)
		}
		if r.DirectSecondsP50 > 0 {
			fmt.Fprintf(stdout, "direct from the registry: p50 %.2f s, max %.2f s; speed-up %.2fx\n", r.DirectSecondsP50, r.DirectSecondsMax, r.SpeedupP50)
		}
		if r.StalledPulls > 0 {
			fmt.Fprintf(stdout, "%d pulls went %s without a byte (--stall-dump DIR keeps both processes' goroutines from then)\n", r.StalledPulls, bench.DefaultStallAfter)
		}
	}
	if len(r.Failures) > 0 {
		return fmt.Errorf("%d pulls failed: %v", len(r.Failures), r.Failures)
	}
	return nil
}

// runBenchStandard runs the standard set (name "standard": results.json)
// or the scale set ("scale": scale.json) and writes the JSON and a plot.
func runBenchStandard(ctx context.Context, name string, args []string, stdout, stderr io.Writer) error {
	set, base, outDef := bench.StandardSet, "results", "bench"
	if name == "scale" {
		set, base, outDef = bench.ScaleSet, "scale", "bench/scale"
	}
	fs := flag.NewFlagSet("bench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", outDef, "directory for "+base+".json and "+base+".svg")
	scale := fs.Int("scale", 1, "divide every blob size by this (a quick run; ratios then mean less)")
	only := fs.Int("only", 0, "run only the rows with this many agents")
	onlySize := fs.String("only-size", "", "run only the rows with this blob size (before --scale)")
	engine := fs.String("engine", "", `every agent's p2p.engine ("library" or "shoal"; empty: the default)`)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *scale < 1 {
		return usageError{errors.New("--scale: want >= 1")}
	}
	var size config.ByteSize
	if *onlySize != "" {
		var err error
		if size, err = config.ParseByteSize(*onlySize); err != nil || size < 1 {
			return usageError{fmt.Errorf("--only-size: want a positive size, got %q", *onlySize)}
		}
	}
	var rows []bench.Row
	for _, r := range set {
		if (*only == 0 || r.Agents == *only) && (size == 0 || r.Size == size) {
			r.Size /= config.ByteSize(*scale)
			r.Engine = *engine
			rows = append(rows, r)
		}
	}
	if len(rows) == 0 {
		return usageError{fmt.Errorf("--only %d, --only-size %q: no row of the %s set has those agents and blob size", *only, *onlySize, name)}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	tmp, cleanup, err := stateDir("", "shoal-bench-")
	if err != nil {
		return err
	}
	defer cleanup()
	res, err := bench.RunStandard(ctx, rows, tmp, stderr, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, base+".json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, base+".svg"), []byte(bench.SVG(res)), 0o644); err != nil {
		return err
	}
	_, err = stdout.Write(append(b, '\n'))
	return err
}

// runBenchTarget runs one of the single-target benchmarks (DESIGN.md
// section 1): single, warm, memory or tracker.
func runBenchTarget(ctx context.Context, name string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	defSize := map[string]string{"single": "256MiB", "warm": "256MiB", "memory": "1GiB", "tracker": "", "floor": "1GiB"}[name]
	var size, rateFlag *string
	var reps *int
	var duration *time.Duration
	switch name {
	case "tracker":
		duration = fs.Duration("duration", 3*time.Second, "how long to announce")
	default:
		size = fs.String("size", defSize, "blob size")
	}
	if name == "single" {
		rateFlag = fs.String("rate", "", "cap on the upstream registry, the agent's link and the direct client (default: none)")
	}
	if name == "warm" {
		reps = fs.Int("reps", 5, "GETs of each kind")
	}
	asJSON := fs.Bool("json", false, "print one JSON object")
	verbose := fs.Bool("v", false, "log every component to stderr")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	var sz config.ByteSize
	var err error
	if size != nil {
		if sz, err = config.ParseByteSize(*size); err != nil || sz < 1 {
			return usageError{fmt.Errorf("--size: want a positive size, got %q", *size)}
		}
	}
	var rt config.Rate
	if rateFlag != nil && *rateFlag != "" {
		if rt, err = config.ParseRate(*rateFlag); err != nil || rt < 0 {
			return usageError{fmt.Errorf("--rate: %q: %v", *rateFlag, err)}
		}
	}
	if reps != nil && *reps < 1 {
		return usageError{errors.New("--reps: want >= 1")}
	}
	if duration != nil && *duration <= 0 {
		return usageError{errors.New("--duration: must be positive")}
	}
	log := commandLog(*verbose, stderr)
	dir, cleanup, err := stateDir("", "shoal-bench-")
	if err != nil {
		return err
	}
	defer cleanup()

	mib := func(n int64) float64 { return float64(n) / (1 << 20) }
	var res any
	var text string
	var fail error
	switch name {
	case "single":
		r, err := bench.Single(ctx, bench.SingleOptions{Size: sz, Rate: rt, Dir: dir, Log: log})
		if err != nil {
			return err
		}
		res = r
		capped := "no cap"
		if rt > 0 {
			capped = "capped at " + rt.String()
		}
		text = fmt.Sprintf("cold single pull of %.0f MiB (%s): through the agent %.2f s (first byte %.2f s), direct from the registry %.2f s; single/direct %.2fx (target <= 1.10)\n",
			mib(r.BlobBytes), capped, r.SingleSeconds, r.TTFBSeconds, r.DirectSeconds, r.SingleOverDirect)
	case "warm":
		r, err := bench.Warm(ctx, bench.WarmOptions{Size: sz, Reps: *reps, Dir: dir, Log: log})
		if err != nil {
			return err
		}
		res = r
		text = fmt.Sprintf("warm pull of %.0f MiB, median of %d: agent %.0f MiB/s, registry %.0f MiB/s; agent/registry %.2fx (target >= 1.0); Range: %d, ok %v\n",
			mib(r.BlobBytes), r.Reps, r.AgentBps/(1<<20), r.RegistryBps/(1<<20), r.WarmOverRegistry, r.RangeStatus, r.RangeOK)
		if !r.RangeOK {
			fail = fmt.Errorf("range request: status %d, want 206 with the requested bytes", r.RangeStatus)
		}
	case "memory":
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("cannot find the shoal binary to run the agent: %w", err)
		}
		r, err := bench.Memory(ctx, bench.MemoryOptions{Size: sz, Binary: exe, Dir: dir, Log: log})
		if err != nil {
			return err
		}
		res = r
		text = fmt.Sprintf("agent process streaming %.0f MiB (cold, %.1f s): private (RssAnon) peak %.1f MiB (target < 64), idle %.1f MiB; RSS peak %.1f MiB; %d samples\n",
			mib(r.BlobBytes), r.PullSeconds, mib(r.AgentPrivatePeakBytes), mib(r.AgentPrivateIdleBytes), mib(r.AgentRSSPeakBytes), r.Samples)
	case "floor":
		r, err := bench.MeasureFloor(ctx, dir, int64(sz))
		if err != nil {
			return err
		}
		res = r
		text = fmt.Sprintf("moving %.0f MiB once through each step, core-s per GiB: pread %.2f, TCP %.2f, pwrite %.2f, SHA-1 %.2f (the library engine's, not in the sum), sha256 %.2f, sendfile %.2f; in all %.2f\n",
			mib(r.Bytes), r.PreadSecondsPerGiB, r.TCPSecondsPerGiB, r.PwriteSecondsPerGiB, r.SHA1SecondsPerGiB, r.SHA256SecondsPerGiB, r.SendfileSecondsPerGiB, r.SecondsPerGiB)
		for _, x := range r.Exchanges {
			text += fmt.Sprintf("each %d KiB block asked for on %d idling connections (pread, request, block, pwrite): %.2f core-s per GiB; with sha256 and sendfile, a delivered GiB in %d KiB pieces costs at least %.2f\n",
				x.BlockBytes>>10, x.Conns, x.SecondsPerGiB, x.BlockBytes>>10, x.DeliveredSecondsPerGiB)
		}
	case "tracker":
		r, err := bench.Tracker(ctx, *duration)
		if err != nil {
			return err
		}
		res = r
		text = fmt.Sprintf("tracker, in-memory store, GOMAXPROCS 1, %d peers in %d swarms: %.0f announces/s (target >= 50000), p50 %.3f ms, p99 %.3f ms (target < 2), max %.2f ms\n",
			r.Peers, r.Swarms, r.AnnouncesPerSecond, r.P50Ms, r.P99Ms, r.MaxMs)
	}
	if *asJSON {
		if err := printJSON(stdout, res); err != nil {
			return err
		}
	} else if _, err := io.WriteString(stdout, text); err != nil {
		return err
	}
	return fail
}
