package origin_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/origin"
)

func loadOrigin(t *testing.T, text string) (origin.Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "origin.toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	var c origin.Config
	err := config.Load(p, &c)
	return c, err
}

// allow_any_registry: off by default; a list of host patterns, each
// checked, a bad one named by its key and index in a message that also
// names the file.
func TestConfigAllowAnyRegistry(t *testing.T) {
	c, err := loadOrigin(t, "")
	if err != nil || c.AllowAnyRegistry != nil {
		t.Fatalf("default: %v, allow_any_registry %q; want off", err, c.AllowAnyRegistry)
	}
	for _, good := range [][]string{
		{"*"},
		{"*.example.com", "ghcr.io"},
		{"http://registry.lan:5000", "https://quay.io", "10.0.0.5", "[fd00::1]:5000"},
	} {
		quoted := make([]string, len(good))
		for i, p := range good {
			quoted[i] = `"` + p + `"`
		}
		c, err := loadOrigin(t, "allow_any_registry = ["+strings.Join(quoted, ", ")+"]\n")
		if err != nil || !slices.Equal(c.AllowAnyRegistry, good) {
			t.Errorf("%q: %v, got %q", good, err, c.AllowAnyRegistry)
		}
	}
	for _, tc := range []struct{ toml, key string }{
		{`allow_any_registry = ["ghcr.io", "ghcr.io/org"]`, "allow_any_registry[1]"},
		{`allow_any_registry = [""]`, "allow_any_registry[0]"},
		{`allow_any_registry = ["ftp://ghcr.io"]`, "allow_any_registry[0]"},
		{`allow_any_registry = ["ghcr.*"]`, "allow_any_registry[0]"},
		{`allow_any_registry = ["*.example.com:99999"]`, "allow_any_registry[0]"},
		{`allow_any_registry = ["quay.io", "QUAY.io"]`, "allow_any_registry[1]"},
		{`allow_any_registry = true`, "allow_any_registry"},
		{`allow_any_registry = "*"`, "allow_any_registry"},
	} {
		_, err := loadOrigin(t, tc.toml+"\n")
		if err == nil || !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), "origin.toml") {
			t.Errorf("%s: error %v, want one naming %s and the file", tc.toml, err, tc.key)
			continue
		}
		var ke *config.KeyError
		if strings.Contains(tc.key, "[") && (!errors.As(err, &ke) || ke.Key != tc.key) {
			t.Errorf("%s: error %v, want a KeyError for %s", tc.toml, err, tc.key)
		}
	}
}
