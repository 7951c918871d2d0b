package config

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// The checks and defaults below are the keys every role shares; each names
// the key it rejects, with the message every role gave before it was shared.

// DefaultLogLevel is every role's log_level when the file names none.
const DefaultLogLevel = "info"

// SetDefault sets *v to def when *v is unset (the zero value).
func SetDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// CheckAddrPort checks that the value v of key is an IP:port.
func CheckAddrPort(key, v string) error {
	if _, err := netip.ParseAddrPort(v); err != nil {
		return Errorf(key, "want IP:port, got %q", v)
	}
	return nil
}

// CheckURLs checks every entry of the list key with CheckHTTPURL, naming the
// first bad one as key[i].
func CheckURLs(key string, urls []string) error {
	for i, u := range urls {
		if err := CheckHTTPURL(u); err != nil {
			return Errorf(fmt.Sprintf("%s[%d]", key, i), "%v", err)
		}
	}
	return nil
}

// CheckLogLevel checks the log_level key.
func CheckLogLevel(level string) error {
	if _, err := ParseLogLevel(level); err != nil {
		return Errorf("log_level", "%v", err)
	}
	return nil
}

// FirstError is the first of errs that is not nil: a Validate lists its
// checks (each one pure) in the order their keys are reported.
func FirstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// ReadSecretFile fills *secret from the file at path (a mounted Kubernetes
// Secret), without its final newline; key names the _file key and other
// the key it stands for. Setting both is an error; an empty path changes
// nothing.
func ReadSecretFile(key, path, other string, secret *string) error {
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Errorf(key, "%v", err)
	}
	v := strings.TrimRight(string(b), "\r\n")
	if *secret != "" && *secret != v { // equal: validated before
		return Errorf(key, "set either %s or %s, not both", key, other)
	}
	if v == "" {
		return Errorf(key, "%s is empty", path)
	}
	*secret = v
	return nil
}
