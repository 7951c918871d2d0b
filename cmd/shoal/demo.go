package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/proto"
	"github.com/shoal-dev/shoal/testbed/cluster"
	"github.com/shoal-dev/shoal/testbed/demo"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts := demo.DefaultOptions()
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&opts.Agents, "agents", opts.Agents, "number of agents (each on 127.0.0.(10+i))")
	fs.IntVar(&opts.Layers, "layers", opts.Layers, "layers in the sample image")
	layerSize := fs.String("layer-size", opts.LayerSize.String(), "size of each layer (e.g. 32MiB)")
	agentRate := fs.String("agent-rate", opts.AgentRate.String(), "each agent's upload and download cap (e.g. 100MB/s, 0 = none)")
	originRate := fs.String("origin-rate", opts.OriginRate.String(), "each origin's upload cap")
	pieceLen := fs.String("piece-length", opts.PieceLength.String(), "metainfo piece length (a power of two)")
	asJSON := fs.Bool("json", false, "print one JSON object instead of the human report")
	serve := fs.Bool("serve", false, "keep the cluster running after the pull, until interrupted")
	upstream := fs.String("upstream", "", "mirror this registry (http(s)://host:port) instead of the built-in one; implies --serve, no sample pull")
	dir := fs.String("dir", "", "state directory (default: a temporary one, removed at exit)")
	verbose := fs.Bool("v", false, "log every component to stderr")
	anyPorts := fs.Bool("any-ports", false, "let the kernel pick every port instead of the defaults (7600, 7610, 7650...)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var err error
	if opts.LayerSize, err = config.ParseByteSize(*layerSize); err != nil {
		return usageError{fmt.Errorf("--layer-size: %w", err)}
	}
	if opts.AgentRate, err = config.ParseRate(*agentRate); err != nil {
		return usageError{fmt.Errorf("--agent-rate: %w", err)}
	}
	if opts.OriginRate, err = config.ParseRate(*originRate); err != nil {
		return usageError{fmt.Errorf("--origin-rate: %w", err)}
	}
	if opts.PieceLength, err = config.ParseByteSize(*pieceLen); err != nil {
		return usageError{fmt.Errorf("--piece-length: %w", err)}
	}
	if opts.Layers < 1 || opts.Layers > 64 {
		return usageError{fmt.Errorf("--layers: want 1..64, got %d", opts.Layers)}
	}
	if opts.LayerSize < 1 || opts.LayerSize > 4<<30 {
		return usageError{fmt.Errorf("--layer-size: want 1B..4GiB, got %s", opts.LayerSize)}
	}
	opts.Log = commandLog(*verbose, stderr)
	opts.DefaultPorts = !*anyPorts
	var cleanup func()
	if opts.Dir, cleanup, err = stateDir(*dir, "shoal-demo-"); err != nil {
		return err
	}
	defer cleanup()

	if *upstream != "" {
		if err := config.CheckHTTPURL(*upstream); err != nil {
			return usageError{fmt.Errorf("--upstream: %w", err)}
		}
		opts.UpstreamURL = *upstream
		fmt.Fprintf(stderr, "starting a tracker, a build-index, %d origins and %d agents mirroring %s...\n", opts.Origins, opts.Agents, *upstream)
		c, err := demo.StartCluster(opts)
		if err != nil {
			return err
		}
		defer c.Close()
		printServe(stdout, c)
		<-ctx.Done()
		return nil
	}
	fmt.Fprintf(stderr, "starting a registry, a tracker, %d origins and %d agents on loopback...\n", opts.Origins, opts.Agents)
	c, blobs, err := demo.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(stderr, "sample image %s:%s loaded upstream (%d blobs, %d x %s layers); every agent pulls every blob now...\n",
		demo.Repo, demo.Tag, len(blobs), opts.Layers, opts.LayerSize)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	r := demo.Pull(pctx, c, blobs)
	cancel()
	if *asJSON {
		if err := printJSON(stdout, r); err != nil {
			return err
		}
	} else {
		printReport(stdout, r, blobs)
	}
	failed := len(r.Failures) > 0 || !r.AllVerified
	if failed && !*serve {
		return fmt.Errorf("%d pulls failed or did not verify", len(r.Failures))
	}
	if *serve {
		if failed {
			// The cluster still runs: say so, and serve it anyway.
			fmt.Fprintf(stderr, "warning: %d sample pulls failed or did not verify (see above); serving the cluster anyway\n", len(r.Failures))
		}
		printServe(stdout, c)
		fmt.Fprintf(stdout, "sample image: %s/%s:%s (through any agent, e.g. %s/%s:%s)\n",
			c.UpstreamHost, demo.Repo, demo.Tag, strings.TrimPrefix(c.Agents[0].URL(), "http://"), demo.Repo, demo.Tag)
		<-ctx.Done()
	}
	return nil
}

func printReport(w io.Writer, r *demo.Report, blobs []demo.Blob) {
	mib := func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
	fmt.Fprintf(w, "\n%d agents pulled %d blobs (%s) each\n\n", r.Agents, r.Blobs, mib(r.BlobBytes))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "agent\taddress\tseconds")
	for i, s := range r.AgentSeconds {
		fmt.Fprintf(tw, "%d\t%s\t%.2f\n", i, cluster.AgentIP(i), s)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nagent time: p50 %.2f s, max %.2f s\n", r.AgentSecondsP50, r.AgentSecondsMax)
	fmt.Fprintf(w, "bytes from upstream: %s  (%d GETs for %d blobs", mib(r.BytesFromUpstream), r.UpstreamBlobGets, r.Blobs)
	for _, b := range blobs {
		fmt.Fprintf(w, "; %s: %d", b.Digest.Encoded()[:12], r.UpstreamGetsBlob[b.Digest.String()])
	}
	fmt.Fprintln(w, ")")
	fmt.Fprintf(w, "bytes from origins:  %s\n", mib(r.BytesFromOrigins))
	fmt.Fprintf(w, "bytes from peers:    %s\n", mib(r.BytesFromPeers))
	fmt.Fprintf(w, "every copy verified: %v\n", r.AllVerified)
	for _, f := range r.Failures {
		fmt.Fprintf(w, "FAILED: %s\n", f)
	}
	fmt.Fprintf(w, "cpu: %.1f core-seconds, peak RSS %s\n", r.CPUSeconds, mib(r.PeakRSSBytes))
}

func printServe(w io.Writer, c *cluster.Cluster) {
	fmt.Fprintf(w, "\ncluster running; interrupt to stop\n")
	if c.Registry != nil {
		fmt.Fprintf(w, "upstream registry: %s\n", c.Registry.URL())
	}
	fmt.Fprintf(w, "tracker:           %s  (announce: %s)\n", c.Tracker.URL(), proto.AnnounceURL(c.Tracker.URL()))
	fmt.Fprintf(w, "build-index:       %s\n", c.BuildIndex.URL())
	for i, a := range c.Agents {
		fmt.Fprintf(w, "agent %d registry:  %s\n", i, a.URL())
	}
}
