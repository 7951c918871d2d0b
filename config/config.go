// Package config loads a role's TOML file strictly: unknown keys and bad
// values are errors that name the key and the file. Each role keeps its own
// Config struct, with defaults beside it; this package only decodes and checks.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/BurntSushi/toml"
)

// Validator is a role config that fills its defaults and checks its values.
// Validate returns errors that name the offending key (see KeyError).
type Validator interface {
	ApplyDefaults()
	Validate() error
}

// KeyError names the config key that holds a bad value.
type KeyError struct {
	Key string
	Err error
}

func (e *KeyError) Error() string { return fmt.Sprintf("key %q: %v", e.Key, e.Err) }
func (e *KeyError) Unwrap() error { return e.Err }

// Errorf builds a KeyError for key.
func Errorf(key, format string, args ...any) error {
	return &KeyError{Key: key, Err: fmt.Errorf(format, args...)}
}

// Load decodes the TOML file at path into cfg, then applies defaults and
// validates. An empty path means "no file": defaults only.
func Load(path string, cfg Validator) error {
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("config %s: %w", path, err)
		}
		if err := decode(data, cfg); err != nil {
			return fmt.Errorf("config %s: %w", path, err)
		}
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		if path == "" {
			return fmt.Errorf("config (defaults): %w", err)
		}
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// Decode parses TOML text into cfg, rejecting unknown keys. It does not apply
// defaults; Load does.
func Decode(data []byte, cfg any) error { return decode(data, cfg) }

func decode(data []byte, cfg any) error {
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(cfg)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			if pe.LastKey != "" {
				return fmt.Errorf("line %d, key %q: %s", pe.Position.Line, pe.LastKey, pe.Message)
			}
			return fmt.Errorf("line %d: %s", pe.Position.Line, pe.Message)
		}
		return err
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = fmt.Sprintf("%q", k.String())
		}
		return fmt.Errorf("unknown key %s", strings.Join(keys, ", "))
	}
	return nil
}

// Encode renders the effective config as TOML (for --print-config).
func Encode(cfg any) ([]byte, error) {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(cfg); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
