// Package httpx holds what every Shoal HTTP server shares: the /health,
// /readiness and /metrics endpoints, request logging and a server that
// shuts down with its context. The OCI error type and codes are part of the
// wire contract and live in proto; the names here are aliases, so a server
// writes httpx.Errorf(...) as before.
package httpx

import (
	"net/http"

	"github.com/shoal-dev/shoal/proto"
)

// OCI distribution-spec error codes (see proto).
const (
	CodeBlobUnknown         = proto.CodeBlobUnknown
	CodeDigestInvalid       = proto.CodeDigestInvalid
	CodeManifestUnknown     = proto.CodeManifestUnknown
	CodeManifestInvalid     = proto.CodeManifestInvalid
	CodeNameInvalid         = proto.CodeNameInvalid
	CodeNameUnknown         = proto.CodeNameUnknown
	CodeRangeInvalid        = proto.CodeRangeInvalid
	CodeUnauthorized        = proto.CodeUnauthorized
	CodeDenied              = proto.CodeDenied
	CodeUnsupported         = proto.CodeUnsupported
	CodeTooManyRequests     = proto.CodeTooManyRequests
	CodeUnavailable         = proto.CodeUnavailable
	CodeBlobIncomplete      = proto.CodeBlobIncomplete
	CodeSizeInvalid         = proto.CodeSizeInvalid
	CodeManifestBlobUnknown = proto.CodeManifestBlobUnknown
	CodeUnknown             = proto.CodeUnknown

	// HeaderError carries the OCI error of an answer to HEAD.
	HeaderError = proto.HeaderError
)

// Error is an error that knows its HTTP status and OCI code.
type Error = proto.Error

// Errorf returns an *Error with the given status and code.
func Errorf(status int, code, format string, args ...any) *Error {
	return proto.Errorf(status, code, format, args...)
}

// Wrap returns an *Error with the given status and code whose cause is err.
func Wrap(err error, status int, code, message string) *Error {
	return proto.Wrap(err, status, code, message)
}

// WriteError writes err as OCI error JSON (see proto.WriteError).
func WriteError(w http.ResponseWriter, r *http.Request, err error) { proto.WriteError(w, r, err) }

// DecodeError reads an OCI error from resp (see proto.DecodeError).
func DecodeError(resp *http.Response) *Error { return proto.DecodeError(resp) }
