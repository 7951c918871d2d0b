package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type sample struct {
	Listen  string        `toml:"listen"`
	Size    ByteSize      `toml:"size"`
	Rate    Rate          `toml:"rate"`
	Timeout time.Duration `toml:"timeout"`
	Sub     struct {
		N int `toml:"n"`
	} `toml:"sub"`
}

func (s *sample) ApplyDefaults() {
	if s.Listen == "" {
		s.Listen = "127.0.0.1:1"
	}
	if s.Size == 0 {
		s.Size = 4 << 20
	}
}

func (s *sample) Validate() error {
	if s.Sub.N < 0 {
		return Errorf("sub.n", "must not be negative, got %d", s.Sub.N)
	}
	return nil
}

func write(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "role.toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoad(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		wantErr    []string // substrings of the error; nil = success
	}{
		{"empty file gives defaults", "", nil},
		{"values", "listen = \"0.0.0.0:9\"\nsize = \"1GiB\"\nrate = \"12.5MB/s\"\ntimeout = \"90s\"\n[sub]\nn = 3\n", nil},
		{"unknown top-level key", "lisen = \"x\"\n", []string{`unknown key "lisen"`}},
		{"unknown nested key", "[sub]\nm = 1\n", []string{`unknown key "sub.m"`}},
		{"bad size", "size = \"12 parsecs\"\n", []string{"size", "12 parsecs"}},
		{"bad duration", "timeout = \"soon\"\n", []string{"timeout", "soon"}},
		{"wrong type", "listen = 5\n", []string{"listen"}},
		{"syntax error", "listen = \n", []string{"line 1"}},
		{"validation names the key", "[sub]\nn = -1\n", []string{`key "sub.n"`, "must not be negative"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := write(t, tc.text)
			var s sample
			err := Load(path, &s)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if s.Listen == "" || s.Size == 0 {
					t.Fatalf("defaults not applied: %+v", s)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load succeeded, want error containing %q", tc.wantErr)
			}
			for _, w := range append(tc.wantErr, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestLoadValues(t *testing.T) {
	var s sample
	if err := Load(write(t, "size = \"1GiB\"\nrate = \"12.5MB/s\"\ntimeout = \"90s\"\n"), &s); err != nil {
		t.Fatal(err)
	}
	if s.Size != 1<<30 || s.Rate != 12_500_000 || s.Timeout != 90*time.Second {
		t.Fatalf("got %+v", s)
	}
}

func TestLoadNoFileUsesDefaults(t *testing.T) {
	var s sample
	if err := Load("", &s); err != nil {
		t.Fatal(err)
	}
	if s.Listen != "127.0.0.1:1" {
		t.Fatalf("got %+v", s)
	}
}

func TestLoadMissingFile(t *testing.T) {
	var s sample
	err := Load("/nonexistent/shoal.toml", &s)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/shoal.toml") || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v", err)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	var s sample
	s.ApplyDefaults()
	s.Rate, s.Timeout, s.Sub.N = 6_250_000, time.Minute, 2
	b, err := Encode(&s)
	if err != nil {
		t.Fatal(err)
	}
	var back sample
	if err := Decode(b, &back); err != nil {
		t.Fatalf("decode of encoded config: %v\n%s", err, b)
	}
	if back != s {
		t.Fatalf("round trip: %+v != %+v\n%s", back, s, b)
	}
}

func TestUnits(t *testing.T) {
	for in, want := range map[string]ByteSize{"0": 0, "1024": 1024, "4MiB": 4 << 20, "1GiB": 1 << 30, "1.5KiB": 1536, "500MB": 500e6, "2 GiB": 2 << 30} {
		if got, err := ParseByteSize(in); err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1MiB", "MiB", "1XB", "NaN", "1e30GiB"} {
		if _, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) succeeded", in)
		}
	}
	for in, want := range map[string]Rate{"12.5MB/s": 12_500_000, "100MiB/s": 100 << 20, "0": 0, "6.25MB": 6_250_000} {
		if got, err := ParseRate(in); err != nil || got != want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, s := range []ByteSize{0, 1, 1023, 4 << 20, 1 << 30, 3 << 10} {
		if got, err := ParseByteSize(s.String()); err != nil || got != s {
			t.Errorf("ByteSize %d -> %q -> %d, %v", s, s.String(), got, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{"", "listen = \"a\"\n[sub]\nn = 1\n", "size = \"4MiB\"", "rate = \"1MB/s\"\ntimeout = \"1s\"", "[[x]]\na=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		var s sample
		_ = Decode([]byte(text), &s) // must never panic
	})
}

func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "password")
	os.WriteFile(p, []byte("s3cret\n"), 0o600)
	var v string
	if err := ReadSecretFile("password_file", p, "password", &v); err != nil || v != "s3cret" {
		t.Fatalf("got %q, %v", v, err)
	}
	if err := ReadSecretFile("password_file", p, "password", &v); err != nil {
		t.Errorf("validating twice: %v", err)
	}
	v = "other"
	if err := ReadSecretFile("password_file", p, "password", &v); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("both set: %v", err)
	}
	v = ""
	if err := ReadSecretFile("password_file", filepath.Join(dir, "missing"), "password", &v); err == nil || !strings.Contains(err.Error(), `"password_file"`) {
		t.Errorf("missing file: %v", err)
	}
}
