package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/shoal-dev/shoal/internal/tlsconf"
)

// commandLog is the logger of demo and bench: every component's info lines
// on stderr with -v, nothing without.
func commandLog(verbose bool, stderr io.Writer) *slog.Logger {
	if !verbose {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// stateDir is dir, or when dir is "" a new temporary directory named after
// prefix; the caller defers cleanup, which removes only a temporary one.
func stateDir(dir, prefix string) (string, func(), error) {
	if dir != "" {
		return dir, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	return tmp, func() { os.RemoveAll(tmp) }, nil
}

// printJSON writes v as indented JSON (--json).
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// clientTLSFlags adds --cacert, --cert and --key to fs; the returned func
// gives the HTTP client they describe (nil: the default client).
func clientTLSFlags(fs *flag.FlagSet, server string) func() (*http.Client, error) {
	var tc tlsconf.Config
	fs.StringVar(&tc.CA, "cacert", "", "PEM CA bundle that verifies an https "+server+" (default: the system roots)")
	fs.StringVar(&tc.Cert, "cert", "", "PEM client certificate for a "+server+" that requires one (mutual TLS)")
	fs.StringVar(&tc.Key, "key", "", "the client certificate's PEM key")
	return func() (*http.Client, error) {
		src, err := tlsconf.New(tc, "", nil)
		if err != nil {
			return nil, usageError{fmt.Errorf("--cacert, --cert, --key: %w", err)}
		}
		if src == nil {
			return nil, nil
		}
		return &http.Client{Transport: src.Transport(http.DefaultTransport.(*http.Transport).Clone())}, nil
	}
}
