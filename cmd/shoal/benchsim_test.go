package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

// bench sim models the agents' default engine unless told otherwise, and
// a bad --min-stall is a usage error that names it.
func TestBenchSimModelsTheDefaultEngine(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		engine string
	}{{nil, "shoal"}, {[]string{"--engine", "library"}, "library"}} {
		var out bytes.Buffer
		args := append([]string{"--agents", "4", "--size", "1MiB", "--rate", "1MB/s", "--json"}, tc.args...)
		if err := runBenchSim(context.Background(), args, &out, io.Discard); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		var r struct {
			Config struct {
				Engine   string
				MinStall float64
			} `json:"sim_config"`
			Verified bool `json:"all_verified"`
		}
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("%v: %v in %s", args, err, out.String())
		}
		if r.Config.Engine != tc.engine || r.Config.MinStall != 1.5 || !r.Verified {
			t.Errorf("%v: engine %q, min stall %g, verified %v: want %q, 1.5, true", args, r.Config.Engine, r.Config.MinStall, r.Verified, tc.engine)
		}
	}
	err := runBenchSim(context.Background(), []string{"--agents", "4", "--size", "1MiB", "--min-stall", "-1s"}, io.Discard, io.Discard)
	var ue usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "min stall") {
		t.Errorf("--min-stall -1s: %v, want a usage error naming it", err)
	}
}
