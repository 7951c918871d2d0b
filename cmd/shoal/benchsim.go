package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/testbed/sim"
)

const benchSimUsage = `  shoal bench sim --agents N --size F --rate R [--origin-rate U] [--upstream-rate U] [--piece-size P]
                  [--warm-origins] [--uneven 0.25 [--slow-conns C]] [--late 0.25] [--churn 0.1] [--seed S] [--runs K]
                  [--conns C] [--max-peers M] [--announce-interval D] [--reveal K] [--queue-depth Q] [--chunk-size B]
                  [--engine shoal|library] [--have-delay D] [--min-stall D] [--in-order] [--upload-order behind|request|rare|pace] [--no-slower-last] [--batch K] [--edge-piece-size P --edge-bytes B] [--serial-uploads] [--rtt D] [--request-latency D] [--waste W] [--agent-times] [--json]
  shoal bench sim --calibrate [--runs K] [--json]   every real row against the model
`

// runBenchSim runs the discrete-event model of the swarm (testbed/sim):
// rows in the shape of `bench swarm --json`, or the calibration table.
func runBenchSim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c sim.Config // calibrated once the engine is known
	fs.IntVar(&c.Agents, "agents", 8, "agents pulling at once")
	size := fs.String("size", "256MiB", "blob size")
	piece := fs.String("piece-size", "auto", `piece length ("auto": the origin's choice by blob size)`)
	rate := fs.String("rate", "25MB/s", "each agent's upload and download cap")
	originRate := fs.String("origin-rate", "", "the origin's upload cap (default: --rate)")
	upstreamRate := fs.String("upstream-rate", "", "the upstream registry's upload cap (default: --origin-rate)")
	fs.BoolVar(&c.Warm, "warm-origins", false, "the origin holds the blob before the clock starts")
	fs.Float64Var(&c.Uneven, "uneven", 0, "fraction of agents whose links run at rate/4")
	fs.IntVar(&c.SlowConns, "slow-conns", 0, "the --uneven agents' p2p conns_per_torrent (0: as the others')")
	fs.Float64Var(&c.Late, "late", 0, "fraction of agents that start when the others are half done")
	fs.Float64Var(&c.Churn, "churn", 0, "fraction of agents killed mid-pull and replaced by fresh ones")
	fs.Uint64Var(&c.Seed, "seed", 1, "random seed (the same seed gives the same run)")
	runs := fs.Int("runs", 1, "runs with seeds seed, seed+1, ...")
	fs.IntVar(&c.ConnsPerTorrent, "conns", sim.DefaultConnsPerTorrent, "p2p conns_per_torrent")
	fs.IntVar(&c.MaxPeers, "max-peers", sim.DefaultMaxPeers, "tracker max_peers")
	announce := fs.Duration("announce-interval", time.Duration(sim.DefaultAnnounceInterval*float64(time.Second)), "p2p announce_interval")
	fs.IntVar(&c.Reveal, "reveal", sim.DefaultReveal, "pieces the origin reveals to a peer at a time")
	fs.IntVar(&c.Batch, "batch", 0, "shoal engine, a what-if: pieces an agent asks a peer for in one go, served to the end in one upload turn (0: one request at a time)")
	fs.IntVar(&c.QueueDepth, "queue-depth", 0, "blocks an agent keeps requested on one connection (0: p2p requests_per_peer's rule, 20 ms of the download cap)")
	edgePiece := fs.String("edge-piece-size", "", "what-if: pieces of this length within --edge-bytes of the blob's start and end, --piece-size between (the origin cuts one length)")
	edgeBytes := fs.String("edge-bytes", "", "what-if: how far from either end the --edge-piece-size pieces reach")
	chunk := fs.String("chunk-size", "auto", `block an agent requests at a time ("auto": the engine's, 128 KiB on shoal, 64 KiB on the library)`)
	fs.StringVar(&c.Engine, "engine", sim.EngineShoal, `the agents' p2p.engine, "shoal" or "library" (the model of each is fitted to the real rows measured on it: --calibrate)`)
	haveDelay := fs.Duration("have-delay", time.Duration(sim.DefaultHaveDelay*float64(time.Second)), "shoal engine: how long a Have may wait for the connection's next write (longer where 4 pieces take longer at the upload cap)")
	minStall := fs.Duration("min-stall", time.Duration(sim.DefaultMinStall*float64(time.Second)), "shoal engine: the least time a peer may sit on an agent's requests before they are asked of others (four of its gaps between blocks or eight blocks at the download cap, this to --max-stall)")
	maxStall := fs.Duration("max-stall", time.Duration(sim.DefaultMaxStall*float64(time.Second)), "shoal engine: the most time a peer may sit on an agent's requests (p2p's, as long as a silent connection is kept; 30s before 2026-12-04)")
	fs.BoolVar(&c.NoBurst, "no-burst", false, "shoal engine, what-if: links without the limiters' burst (p2p's max(rate/20, 64 KiB) at once after a pause)")
	fs.BoolVar(&c.NoSlowerLast, "no-slower-last", false, "shoal engine, what-if: without the slower-last rule (p2p's: an agent's upload turns serve the peers that told an upload cap under half its own after the others)")
	fs.BoolVar(&c.KeepSnubs, "keep-snubs", false, "shoal engine, what-if: a snubbed peer gets no requests even while its downloader is underfed (p2p before 2026-12-06, midday)")
	fs.BoolVar(&c.NoUnderfed, "no-underfed", false, "shoal engine, what-if: without the underfed rule (p2p's: an agent under 90 % of its download cap keeps twice the requests to its quicker peers)")
	fs.BoolVar(&c.InOrder, "in-order", false, "agents ask for the lowest index first instead of the rarest")
	fs.StringVar(&c.UploadOrder, "upload-order", sim.UploadBehind, `shoal engine: the order its upload cap serves blocks in, "behind" (the peer that told the uploader of the fewest pieces first, as p2p does), "request", "rare" (a what-if: as behind, a piece fewer of the uploader's peers hold first) or "pace" (a what-if: the peer furthest behind its own download cap first)`)
	fs.BoolVar(&c.SerialUploads, "serial-uploads", false, "what-if: agents upload one piece at a time at the cap, in request order")
	rtt := fs.Duration("rtt", time.Duration(sim.DefaultRTT*float64(time.Second)), "round trip between nodes")
	reqLat := fs.Duration("request-latency", 0, fmt.Sprintf("from a piece being requestable to its first byte, beyond one RTT (default: the engine's, %s on the library, %s on shoal)",
		time.Duration(sim.DefaultRequestLatency*float64(time.Second)), time.Duration(sim.DefaultEngineRequestLatency*float64(time.Second))))
	fs.Float64Var(&c.Waste, "waste", 0, fmt.Sprintf("extra bytes per piece traded between agents, duplicate blocks (default: the engine's, %g on the library, %g on shoal)", sim.DefaultWaste, sim.DefaultEngineWaste))
	agentTimes := fs.Bool("agent-times", false, "include every agent's time and bound in the JSON")
	calibrate := fs.Bool("calibrate", false, "run every real bench row through the model and compare")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if *runs < 1 {
		return usageError{errors.New("--runs: want >= 1")}
	}
	c.AnnounceInterval, c.RTT, c.RequestLatency, c.HaveDelay, c.MinStall, c.MaxStall = announce.Seconds(), rtt.Seconds(), reqLat.Seconds(), haveDelay.Seconds(), minStall.Seconds(), maxStall.Seconds()
	if *calibrate {
		// Each row runs on the engine it was measured with.
		return printCalibration(ctx, c, *runs, *asJSON, stdout)
	}
	c = c.Calibrated()
	var err error
	parseRate := func(name, v string, dst *float64) {
		if err == nil && v != "" {
			var r config.Rate
			if r, err = config.ParseRate(v); err != nil {
				err = usageError{fmt.Errorf("--%s: %w", name, err)}
			}
			*dst = float64(r)
		}
	}
	parseRate("rate", *rate, &c.Rate)
	parseRate("origin-rate", *originRate, &c.OriginRate)
	parseRate("upstream-rate", *upstreamRate, &c.UpstreamRate)
	if err != nil {
		return err
	}
	sz, err := config.ParseByteSize(*size)
	if err != nil || sz < 1 {
		return usageError{fmt.Errorf("--size: want a positive size, got %q", *size)}
	}
	c.BlobBytes = int64(sz)
	if *chunk != "auto" {
		ch, err := config.ParseByteSize(*chunk)
		if err != nil || ch < 1 {
			return usageError{fmt.Errorf("--chunk-size: want a positive size or \"auto\", got %q", *chunk)}
		}
		c.ChunkBytes = int64(ch)
	}
	if *edgePiece != "" {
		p, err := config.ParseByteSize(*edgePiece)
		if err != nil || p < 1 {
			return usageError{fmt.Errorf("--edge-piece-size: want a positive size, got %q", *edgePiece)}
		}
		b, err := config.ParseByteSize(*edgeBytes)
		if err != nil || b < 1 {
			return usageError{fmt.Errorf("--edge-bytes: want a positive size with --edge-piece-size, got %q", *edgeBytes)}
		}
		c.EdgePieceBytes, c.EdgeBytes = int64(p), int64(b)
	}
	if *piece != "auto" {
		p, err := config.ParseByteSize(*piece)
		if err != nil || p < 1 {
			return usageError{fmt.Errorf("--piece-size: want a positive size, got %q", *piece)}
		}
		c.PieceBytes = int64(p)
	}
	check := c
	check.ApplyDefaults()
	if err := check.Validate(); err != nil {
		return usageError{err}
	}
	for k := range *runs {
		run := c
		run.Seed = c.Seed + uint64(k)
		t0 := time.Now()
		r, err := sim.Run(ctx, run)
		if err != nil {
			return err
		}
		wall := time.Since(t0).Seconds()
		if !*agentTimes {
			r.AgentSeconds, r.AgentBounds = nil, nil
		}
		if *asJSON {
			if err := printJSON(stdout, struct {
				*sim.Result
				WallSeconds float64 `json:"sim_wall_seconds"`
			}{r, wall}); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(stdout, "simulated: %d agents, %.0f MiB blob in %d KiB pieces, agents at %s, origin at %s (%s), seed %d\n",
			r.Agents, float64(r.BlobBytes)/(1<<20), r.PieceBytes>>10, config.Rate(r.RateBps), config.Rate(r.OriginRateBps),
			map[bool]string{true: "warm", false: "cold"}[r.WarmOrigins], run.Seed)
		fmt.Fprintf(stdout, "T_min %.2f s; agents p50 %.2f s (%.3fx), max %.2f s (%.3fx); over own bound p50 %.3fx, max %.3fx; first byte p50 %.2f s; origin sent %.3f F, every piece once by %.2f s (%.3fx)\n",
			r.TMinSeconds, r.AgentSecondsP50, r.P50OverTMin, r.AgentSecondsMax, r.MaxOverTMin, r.P50OverBound, r.MaxOverBound, r.TTFBSecondsP50, r.OriginSentOverF, r.OriginOutSeconds, r.OriginOutSeconds/r.TMinSeconds)
		fmt.Fprintf(stdout, "%d events, %d piece transfers, %.1f connections per agent; %.1f s of CPU\n", r.Events, r.PiecesTraded, r.ConnsPerAgent, wall)
	}
	return nil
}

func printCalibration(ctx context.Context, c sim.Config, runs int, asJSON bool, stdout io.Writer) error {
	cs, err := sim.Calibrate(ctx, c, sim.RealRows, runs)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(stdout, cs)
	}
	fmt.Fprintln(stdout, "| row | piece | request window | real p50/T_min | sim p50/T_min | sim - real | real max | sim max | source |")
	fmt.Fprintln(stdout, "|---|---|---|---|---|---|---|---|---|")
	for _, x := range cs {
		src := x.Row.Source
		if !x.Row.Current {
			src += " (not held to +-0.05)"
		}
		fmt.Fprintf(stdout, "| %s | %d KiB | %s | %.3f | %.3f | %+.3f | %.3f | %.3f | %s |\n",
			x.Row.Name, x.Row.PieceBytes>>10, x.Row.Code, x.Row.P50, x.SimP50, x.Diff, x.Row.Max, x.SimMax, src)
	}
	return nil
}
