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
	"slices"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/internal/bench"
)

const benchUsage = `Usage:
  shoal bench standard [--out DIR] [--scale K]   the standard set -> DIR/results.json, DIR/results.svg
  shoal bench swarm --agents N --size F --rate R [--origin-rate U] [--upstream-rate U]
                    [--origins K] [--piece-size P] [--warm-origins] [--baseline direct] [--json]
`

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "standard" {
		return runBenchStandard(ctx, args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "swarm" {
		fmt.Fprint(stderr, benchUsage)
		return usageError{errors.New("want a benchmark name: swarm or standard")}
	}
	fs := flag.NewFlagSet("bench swarm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o bench.SwarmOptions
	fs.IntVar(&o.Agents, "agents", 8, "agents pulling at once (each on its own 127.0.0.x)")
	fs.IntVar(&o.Origins, "origins", 1, "origins")
	size := fs.String("size", "256MiB", "blob size")
	piece := fs.String("piece-size", "4MiB", "metainfo piece length")
	rate := fs.String("rate", "25MB/s", "each agent's upload and download cap")
	originRate := fs.String("origin-rate", "", "each origin's upload cap (default: --rate)")
	upstreamRate := fs.String("upstream-rate", "", "the upstream registry's upload cap (default: --origin-rate)")
	fs.BoolVar(&o.WarmOrigins, "warm-origins", false, "preheat the origins before timing")
	fs.StringVar(&o.Baseline, "baseline", "", `"direct": also time every client pulling straight from the registry`)
	asJSON := fs.Bool("json", false, "print one JSON object")
	dir := fs.String("dir", "", "state directory (default: temporary)")
	verbose := fs.Bool("v", false, "log every component to stderr")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
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
	if o.PieceSize, err = config.ParseByteSize(*piece); err != nil {
		return usageError{fmt.Errorf("--piece-size: %w", err)}
	}
	if o.Baseline != "" && o.Baseline != "direct" {
		return usageError{fmt.Errorf("--baseline: want \"direct\", got %q", o.Baseline)}
	}
	if o.Rate <= 0 {
		return usageError{errors.New("--rate: must be positive")}
	}
	o.ApplyDefaults()
	o.Log = slog.New(slog.DiscardHandler)
	if *verbose {
		o.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	o.Dir = *dir
	if o.Dir == "" {
		if o.Dir, err = os.MkdirTemp("", "shoal-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(o.Dir)
	}
	r, err := bench.Swarm(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else {
		mib := func(n int64) float64 { return float64(n) / (1 << 20) }
		fmt.Fprintf(stdout, "%d agents, %.0f MiB blob, agents capped at %s, origin at %s, upstream at %s (%s origins)\n",
			r.Agents, mib(r.BlobBytes), o.Rate, o.OriginRate, o.UpstreamRate, map[bool]string{true: "warm", false: "cold"}[o.WarmOrigins])
		fmt.Fprintf(stdout, "T_min %.2f s; agents p50 %.2f s (%.2fx), p90 %.2f s, max %.2f s (%.2fx); first byte p50 %.2f s\n",
			r.TMinSeconds, r.AgentSecondsP50, r.P50OverTMin, r.AgentSecondsP90, r.AgentSecondsMax, r.MaxOverTMin, r.TTFBSecondsP50)
		fmt.Fprintf(stdout, "bytes: upstream %.0f MiB (%d GETs), origins sent %.0f MiB (%.2f F), agents got %.0f MiB from origins, %.0f MiB from peers\n",
			mib(r.BytesFromUpstream), r.UpstreamBlobGets, mib(r.OriginBytesSent), r.OriginSentOverF, mib(r.BytesFromOrigins), mib(r.BytesFromPeers))
		fmt.Fprintf(stdout, "cpu %.1f core-seconds on %d cores (cpu_bound: %v), peak RSS %.0f MiB, verified: %v\n",
			r.CPUSeconds, r.CPUCores, r.CPUBound, mib(r.PeakRSSBytes), r.AllVerified)
		if r.DirectSecondsP50 > 0 {
			fmt.Fprintf(stdout, "direct from the registry: p50 %.2f s, max %.2f s; speed-up %.2fx\n", r.DirectSecondsP50, r.DirectSecondsMax, r.SpeedupP50)
		}
	}
	if len(r.Failures) > 0 {
		return fmt.Errorf("%d pulls failed: %v", len(r.Failures), r.Failures)
	}
	return nil
}

// runBenchStandard runs the standard set and writes results.json and a plot.
func runBenchStandard(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench standard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "bench", "directory for results.json and results.svg")
	scale := fs.Int("scale", 1, "divide every blob size by this (a quick run; ratios then mean less)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if *scale < 1 {
		return usageError{errors.New("--scale: want >= 1")}
	}
	rows := slices.Clone(bench.StandardSet)
	for i := range rows {
		rows[i].Size /= config.ByteSize(*scale)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "shoal-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	res, err := bench.RunStandard(ctx, rows, tmp, stderr, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "results.svg"), []byte(bench.SVG(res)), 0o644); err != nil {
		return err
	}
	_, err = stdout.Write(append(b, '\n'))
	return err
}
