package httpx

import (
	"errors"
	"testing"
)

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		h    string
		size int64
		want []ByteRange
		err  bool
	}{
		{"", 10, nil, false},
		{"bytes=0-4", 10, []ByteRange{{0, 5}}, false},
		{"bytes=5-", 10, []ByteRange{{5, 5}}, false},
		{"bytes=-3", 10, []ByteRange{{7, 3}}, false},
		{"bytes=-30", 10, []ByteRange{{0, 10}}, false},
		{"bytes=8-100", 10, []ByteRange{{8, 2}}, false},
		{"bytes=0-0,2-3", 10, []ByteRange{{0, 1}, {2, 2}}, false},
		{"bytes=10-", 10, nil, true},
		{"bytes=5-4", 10, nil, true},
		{"bytes=-0", 10, nil, true},
		{"bytes=abc", 10, nil, true},
		{"bytes=+1-2", 10, nil, true},
		{"items=0-1", 10, nil, true},
		{"bytes=", 10, nil, true},
		{"bytes=0-", 0, nil, true},
	} {
		got, err := ParseRange(tc.h, tc.size)
		if tc.err != (err != nil) || (err != nil && !errors.Is(err, ErrRangeUnsatisfiable)) {
			t.Errorf("ParseRange(%q, %d) err = %v, want error %v", tc.h, tc.size, err, tc.err)
			continue
		}
		if len(got) != len(tc.want) {
			t.Errorf("ParseRange(%q, %d) = %v, want %v", tc.h, tc.size, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("ParseRange(%q, %d) = %v, want %v", tc.h, tc.size, got, tc.want)
			}
		}
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-4", "bytes=-3", "bytes=5-", "bytes=0-0,2-3", "bytes=abc"} {
		f.Add(s, int64(10))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			return
		}
		rs, err := ParseRange(h, size)
		if err != nil {
			return
		}
		for _, r := range rs {
			if r.Start < 0 || r.Length <= 0 || r.Start+r.Length > size {
				t.Fatalf("ParseRange(%q, %d) gave out-of-bounds %v", h, size, r)
			}
		}
	})
}
