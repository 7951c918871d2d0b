// Command shoal is the one binary of every Shoal role:
//
//	shoal tracker|origin|agent|buildindex --config FILE.toml [--print-config]
//	shoal demo [--agents N] [--json] [--serve]
//	shoal get [--agent URL] [--platform os/arch] [--blob] -o DIR|FILE REF
//	shoal node-setup [--registry HOST[=URL]]... [--uninstall] [--wait]
//	shoal preheat [--buildindex URL] [--scope ...] [--platform ...] [--wait] REF
//	shoal version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/shoal-dev/shoal/agent"
	"github.com/shoal-dev/shoal/buildindex"
	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/origin"
	"github.com/shoal-dev/shoal/tracker"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

const usage = `shoal: peer-to-peer distribution of container images and large blobs

Usage:
  shoal tracker --config FILE.toml   run a tracker (peer graph, metainfo)
  shoal origin  --config FILE.toml   run an origin (upstream fetch, seeding)
  shoal agent   --config FILE.toml   run a node agent (registry mirror on 127.0.0.1:7650)
  shoal buildindex --config FILE.toml
                                     run a build-index (tag -> manifest digest)
  shoal demo    [--agents N] [--json] [--serve]
                                     an all-in-one swarm on loopback with a built-in image
  shoal bench swarm --agents N --size F --rate R [--json] ...
                                     measure a swarm against its physical bound
  shoal get     [--agent URL] [--platform os/arch[/variant]] -o DIR REGISTRY/REPO:TAG
  shoal get     [--agent URL] --blob -o FILE REGISTRY/REPO@sha256:...
                                     download an image, index, artifact (as an OCI
                                     layout) or one blob through the node's agent:
                                     verified, resumable
  shoal preheat [--buildindex URL] [--token T] [--scope origins|all|agents=a,b|percent=N]
                [--platform os/arch]... [--pin 24h] [--wait] REGISTRY/REPO:TAG
                                     warm the origins or the agents with an image
                                     (a job on the build-index), with progress
  shoal node-setup [--registry HOST[=URL]]... [--uninstall] [--wait]
                                     point this node's containerd (hosts.toml) and
                                     CRI-O (registries.conf.d) at the agent
  shoal version

Each role runs with defaults when --config is omitted; --print-config prints
the effective configuration as TOML.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "tracker", "origin", "agent", "buildindex":
		err = roles[args[0]](ctx, args[1:], stdout, stderr)
	case "demo":
		err = runDemo(ctx, args[1:], stdout, stderr)
	case "bench":
		err = runBench(ctx, args[1:], stdout, stderr)
	case "get":
		err = runGet(ctx, args[1:], stdout, stderr)
	case "node-setup":
		err = runNodeSetup(ctx, args[1:], stdout, stderr)
	case "preheat":
		err = runPreheat(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "shoal %s\n", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "shoal: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "shoal %s: %v\n", args[0], err)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

type usageError struct{ error }

type runner interface {
	Run(ctx context.Context) error
}

// roles are the long-running subcommands: each loads its role's config
// and runs the role.
var roles = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error{
	"tracker": serve("tracker", func(c *tracker.Config) *string { return &c.LogLevel },
		func(c tracker.Config, log *slog.Logger) (*tracker.Server, error) { return tracker.New(c, log) }),
	"origin": serve("origin", func(c *origin.Config) *string { return &c.LogLevel }, origin.New),
	"agent":  serve("agent", func(c *agent.Config) *string { return &c.LogLevel }, agent.New),
	"buildindex": serve("buildindex", func(c *buildindex.Config) *string { return &c.LogLevel },
		func(c buildindex.Config, log *slog.Logger) (*buildindex.Server, error) { return buildindex.New(c, log) }),
}

// serve is the subcommand of a role whose config is C (level: its
// log_level key) and whose server newRole builds.
func serve[C any, P interface {
	*C
	config.Validator
}, R runner](name string, level func(*C) *string, newRole func(C, *slog.Logger) (R, error)) func(context.Context, []string, io.Writer, io.Writer) error {
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		var cfg C
		return runRole(ctx, name, args, P(&cfg), level(&cfg), stdout, stderr, func(log *slog.Logger) (runner, error) {
			return newRole(cfg, log)
		})
	}
}

// runRole parses --config/--print-config, loads the file strictly and runs
// the role until a signal arrives.
func runRole(ctx context.Context, role string, args []string, cfg config.Validator, level *string,
	stdout, stderr io.Writer, build func(*slog.Logger) (runner, error)) error {
	fs := flag.NewFlagSet(role, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "TOML config file (defaults apply to every key left out)")
	printCfg := fs.Bool("print-config", false, "print the effective config as TOML and exit")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if err := config.Load(*path, cfg); err != nil {
		return err
	}
	if *printCfg {
		var out any = cfg
		if r, ok := cfg.(interface{ Redacted() any }); ok {
			out = r.Redacted() // never print credentials
		}
		b, err := config.Encode(out)
		if err != nil {
			return err
		}
		_, err = stdout.Write(b)
		return err
	}
	lvl, _ := config.ParseLogLevel(*level) // validated by Load
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})).With("role", role)
	r, err := build(log)
	if err != nil {
		var ke *config.KeyError
		if errors.As(err, &ke) && *path != "" {
			// A key whose value failed at start ([tls] files, root).
			return fmt.Errorf("config %s: %w", *path, err)
		}
		return err
	}
	log.Info("starting", "version", version)
	return r.Run(ctx)
}

// parseFlags parses args into fs: -h gives flag.ErrHelp (exit 0 after the
// usage), any other mistake a usageError (exit 2).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	return nil
}
