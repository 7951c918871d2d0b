package config

import (
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"strconv"
	"strings"
)

// ByteSize is a size in bytes written like "4MiB", "1GiB", "500MB" or "1024".
type ByteSize int64

var sizeUnits = []struct {
	suffix string
	mult   float64
}{
	// Longest suffixes first so "MiB" is not read as "B".
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

// ParseByteSize parses a size such as "256MiB" or "12.5MB".
func ParseByteSize(s string) (ByteSize, error) {
	v, err := parseUnit(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	return ByteSize(v), nil
}

func parseUnit(s string) (int64, error) {
	mult := 1.0
	num := s
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			mult, num = u.mult, strings.TrimSpace(strings.TrimSuffix(s, u.suffix))
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("want a number with an optional unit (B, KiB, MiB, GiB, kB, MB, GB)")
	}
	if f < 0 {
		return 0, fmt.Errorf("must not be negative")
	}
	v := f * mult
	if v > math.MaxInt64/2 {
		return 0, fmt.Errorf("too large")
	}
	return int64(v), nil
}

func (b *ByteSize) UnmarshalText(text []byte) error { return unmarshalWith(b, text, ParseByteSize) }

func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

func (b ByteSize) String() string {
	switch {
	case b != 0 && b%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", b/(1<<30))
	case b != 0 && b%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", b/(1<<20))
	case b != 0 && b%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", b/(1<<10))
	}
	return fmt.Sprintf("%dB", int64(b))
}

// Rate is a bandwidth in bytes per second written like "12.5MB/s" or
// "100MiB/s"; 0 means unlimited.
type Rate int64

// ParseRate parses "12.5MB/s" (the "/s" is optional).
func ParseRate(s string) (Rate, error) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "/s")
	v, err := parseUnit(t)
	if err != nil {
		return 0, fmt.Errorf("rate %q: %w", s, err)
	}
	return Rate(v), nil
}

func (r *Rate) UnmarshalText(text []byte) error { return unmarshalWith(r, text, ParseRate) }

// unmarshalWith sets *dst to parse(text), leaving it as it was on an error.
func unmarshalWith[T any](dst *T, text []byte, parse func(string) (T, error)) error {
	v, err := parse(string(text))
	if err != nil {
		return err
	}
	*dst = v
	return nil
}

func (r Rate) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

func (r Rate) String() string {
	if r == 0 {
		return "0"
	}
	return strconv.FormatFloat(float64(r)/1e6, 'f', -1, 64) + "MB/s"
}

// ParseLogLevel reads "debug", "info", "warn" or "error".
func ParseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("want debug, info, warn or error, got %q", s)
	}
	return l, nil
}

// CheckHTTPURL accepts http(s)://host[:port][/path] URLs.
func CheckHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("want an http(s) URL with a host, got %q", s)
	}
	return nil
}
