package origin

import (
	"context"
	"errors"
	"net/http"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/store"
	"github.com/shoal-dev/shoal/internal/upstream"
)

// writeErr maps fetch errors onto OCI errors.
func writeErr(w http.ResponseWriter, r *http.Request, err error) {
	httpx.WriteError(w, r, ociError(err))
}

func ociError(err error) error {
	var he *httpx.Error
	switch {
	case errors.As(err, &he):
		return he
	case errors.Is(err, upstream.ErrNotFound), errors.Is(err, store.ErrNotFound):
		return httpx.Wrap(err, http.StatusNotFound, httpx.CodeBlobUnknown, "blob unknown to upstream")
	case errors.Is(err, upstream.ErrInvalidName):
		return httpx.Wrap(err, http.StatusBadRequest, httpx.CodeNameInvalid, "invalid repository name")
	case errors.Is(err, upstream.ErrUnknownRegistry):
		return unknownRegistry(err)
	case errors.Is(err, upstream.ErrUnauthorized):
		return httpx.Wrap(err, http.StatusBadGateway, httpx.CodeDenied, "upstream refused the origin's credentials")
	case errors.Is(err, store.ErrDigestMismatch):
		return httpx.Wrap(err, http.StatusBadGateway, httpx.CodeDigestInvalid, "upstream sent content that does not match the digest")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return httpx.Wrap(err, http.StatusGatewayTimeout, httpx.CodeUnavailable, "timed out waiting for upstream")
	}
	return httpx.Wrap(err, http.StatusBadGateway, httpx.CodeUnavailable, "upstream unavailable")
}
