package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/internal/fetch"
)

const getUsage = `Usage:
  shoal get [--agent URL] [--platform os/arch[/variant]] -o DIR REGISTRY/REPO[:TAG|@sha256:...]
      write an OCI image layout (any image, index or artifact)
  shoal get [--agent URL] --blob -o FILE REGISTRY/REPO@sha256:...
      download one blob

An https agent (its registry API off loopback, with [tls]) is verified
with --cacert; --cert and --key present a client certificate (mutual TLS).

Downloads go through the node's agent; every blob is verified against its
digest, and an interrupted download resumes where it stopped.
`

// runGet is "shoal get": a client of the agent's registry API.
func runGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, getUsage); fs.PrintDefaults() }
	agentURL := fs.String("agent", "http://127.0.0.1:7650", "the node agent's registry URL")
	out := fs.String("o", "", "output: a directory (OCI layout), or a file with --blob")
	platform := fs.String("platform", "", "os/arch[/variant] to pick from an index (default: every platform)")
	blob := fs.Bool("blob", false, "download the blob REF names (by digest) instead of a manifest")
	parallel := fs.Int("parallel", 4, "blobs downloaded at once")
	httpClient := clientTLSFlags(fs, "agent")
	refs, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(refs) != 1 {
		return usageError{fmt.Errorf("want one reference, got %d\n%s", len(refs), getUsage)}
	}
	if *out == "" {
		return usageError{errors.New("-o is required")}
	}
	ref, err := fetch.ParseRef(refs[0])
	if err != nil {
		return usageError{err}
	}
	c := &fetch.Client{Base: *agentURL}
	if c.HTTP, err = httpClient(); err != nil {
		return err
	}
	prog := newGetProgress(stdout)
	start := time.Now()
	if *blob {
		d := ref.Digest()
		if d == "" {
			return usageError{fmt.Errorf("--blob needs a reference by digest (REPO@sha256:...), got %s", ref)}
		}
		_, err = c.Blob(ctx, ref, d, -1, *out, prog.Blob(d, -1))
	} else {
		var o fetch.Options
		o.Progress, o.Parallel = prog, *parallel
		if *platform != "" {
			pl, err := fetch.ParsePlatform(*platform)
			if err != nil {
				return usageError{err}
			}
			o.Platform = &pl
		}
		var roots []ocispec.Descriptor
		roots, err = c.Layout(ctx, ref, *out, o)
		if err == nil {
			for _, r := range roots {
				prog.Note(fmt.Sprintf("%s %s -> %s", r.MediaType, r.Digest, *out))
			}
		}
	}
	prog.Finish(err, time.Since(start))
	if err != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}
	return nil
}

// parseInterleaved parses flags before and after the positional arguments
// (shoal get REF -o DIR), which flag.Parse alone stops at.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// isTerminal says whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
