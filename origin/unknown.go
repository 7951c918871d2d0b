package origin

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/upstream"
)

// unknownRegistry is the answer for a namespace that names a registry the
// origin is not configured for: which registry, which ones it does mirror,
// and the keys of the origin's config file that would let it through.
//
// 403 DENIED, not 404 NAME_UNKNOWN: nothing was looked up, the origin
// refuses by its configuration, and the answer must reach the user.
// containerd tries a mirror, then the registry itself; when every host
// fails it reports a mirror's 404 as a bare "not found" (what the registry
// itself would say of a missing image), but keeps any other 4xx, with its
// body, as the error it shows. Docker prints the message with either code.
// Being a 4xx, it is final everywhere in the cluster: the tracker, the
// build-index and the agent pass it on unchanged and try no other source,
// as they would for an outage (5xx).
func unknownRegistry(err error) *httpx.Error {
	var ue *upstream.UnknownRegistryError
	if !errors.As(err, &ue) {
		return httpx.Wrap(err, http.StatusForbidden, httpx.CodeDenied, "registry not configured on the Shoal origins")
	}
	mirrored := "no registry"
	if len(ue.Configured) > 0 {
		mirrored = strings.Join(ue.Configured, ", ")
	}
	allow := "allow_any_registry is off"
	if len(ue.AllowAny) > 0 {
		allow = "allow_any_registry = " + quoteList(ue.AllowAny) + " does not match it"
	}
	var msg string
	if ue.Host == "" {
		msg = fmt.Sprintf("the namespace names no registry and the Shoal origins have no default_upstream (they mirror %s)", mirrored)
	} else {
		msg = fmt.Sprintf("registry %q is not configured on the Shoal origins (they mirror %s; %s). "+
			"To pull it through Shoal, add [[upstream]] host = %q to the origins' config file (shoal origin --config FILE.toml), "+
			"or a pattern that matches it to allow_any_registry there (allow_any_registry = [%q]), and restart the origins",
			ue.Host, mirrored, allow, ue.Host, ue.Host)
	}
	e := httpx.Wrap(err, http.StatusForbidden, httpx.CodeDenied, msg)
	e.Detail = map[string]any{
		"registry":           ue.Host,
		"upstreams":          ue.Configured,
		"allow_any_registry": nonNil(ue.AllowAny),
		"config":             "origin: [[upstream]] host, allow_any_registry",
	}
	return e
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func nonNil(ss []string) []string {
	if ss == nil {
		return []string{}
	}
	return ss
}
