package httpx

import (
	"errors"
	"strconv"
	"strings"
)

// ErrRangeUnsatisfiable: a Range header that cannot be served for a blob
// of the given size (malformed, or starting past the end).
var ErrRangeUnsatisfiable = errors.New("range not satisfiable")

// ByteRange is [Start, Start+Length).
type ByteRange struct{ Start, Length int64 }

// ParseRange parses a "bytes=" Range header against size (RFC 9110 14.1.2).
// An empty header gives nil ranges. Each range is clamped to the blob.
func ParseRange(h string, size int64) ([]ByteRange, error) {
	if h == "" {
		return nil, nil
	}
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return nil, ErrRangeUnsatisfiable
	}
	var out []ByteRange
	for part := range strings.SplitSeq(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		first, last, ok := strings.Cut(part, "-")
		if !ok {
			return nil, ErrRangeUnsatisfiable
		}
		first, last = strings.TrimSpace(first), strings.TrimSpace(last)
		var r ByteRange
		if first == "" {
			// Suffix range: the last N bytes.
			n, err := parseNonNeg(last)
			if err != nil || n == 0 || size == 0 {
				// Nothing to take the last bytes of (found by FuzzParseRange).
				return nil, ErrRangeUnsatisfiable
			}
			n = min(n, size)
			r = ByteRange{size - n, n}
		} else {
			start, err := parseNonNeg(first)
			if err != nil || start >= size {
				return nil, ErrRangeUnsatisfiable
			}
			end := size - 1
			if last != "" {
				e, err := parseNonNeg(last)
				if err != nil || e < start {
					return nil, ErrRangeUnsatisfiable
				}
				end = min(e, size-1)
			}
			r = ByteRange{start, end - start + 1}
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, ErrRangeUnsatisfiable
	}
	return out, nil
}

func parseNonNeg(s string) (int64, error) {
	if s == "" || strings.ContainsAny(s, "+-") {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseInt(s, 10, 64)
}
