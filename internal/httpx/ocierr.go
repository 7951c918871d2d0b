// Package httpx holds what every Shoal HTTP server shares: OCI error JSON,
// the /health, /readiness and /metrics endpoints, request logging and a
// server that shuts down with its context.
package httpx

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// OCI distribution-spec error codes.
const (
	CodeBlobUnknown         = "BLOB_UNKNOWN"
	CodeDigestInvalid       = "DIGEST_INVALID"
	CodeManifestUnknown     = "MANIFEST_UNKNOWN"
	CodeManifestInvalid     = "MANIFEST_INVALID"
	CodeNameInvalid         = "NAME_INVALID"
	CodeNameUnknown         = "NAME_UNKNOWN"
	CodeRangeInvalid        = "RANGE_INVALID"
	CodeUnauthorized        = "UNAUTHORIZED"
	CodeDenied              = "DENIED"
	CodeUnsupported         = "UNSUPPORTED"
	CodeTooManyRequests     = "TOOMANYREQUESTS"
	CodeUnavailable         = "UNAVAILABLE"     // not in the spec's list; used for 502/503 with a clear message
	CodeBlobIncomplete      = "BLOB_INCOMPLETE" // not in the spec's list; 409: the blob is still arriving, try again
	CodeSizeInvalid         = "SIZE_INVALID"
	CodeManifestBlobUnknown = "MANIFEST_BLOB_UNKNOWN"
)

// Error is an error that knows its HTTP status and OCI code.
type Error struct {
	Status  int
	Code    string
	Message string
	Detail  any
	Err     error // cause, for logs; never sent to the client
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given status and code.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error with the given status and code whose cause is err.
func Wrap(err error, status int, code, message string) *Error {
	return &Error{Status: status, Code: code, Message: message, Err: err}
}

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// HeaderError carries the OCI error of an answer to HEAD, which has no
// body: the JSON of one entry of the error body ({"code","message"}). A
// component that asked another with HEAD (the build-index resolving a tag
// through an origin) passes the reason on with it, and `curl -I` shows it.
const HeaderError = "X-Shoal-Error"

// WriteError writes err as OCI error JSON (for HEAD, in HeaderError).
// Errors that are not *Error become 500 UNKNOWN without leaking their text.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Status: http.StatusInternalServerError, Code: "UNKNOWN", Message: "internal error", Err: err}
	}
	entry := errorEntry{Code: e.Code, Message: e.Message, Detail: e.Detail}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.Header().Del("Docker-Content-Digest")
	if r != nil && r.Method == http.MethodHead {
		// json.Marshal escapes control characters: the value stays one line.
		if b, err := json.Marshal(entry); err == nil {
			w.Header().Set(HeaderError, string(b))
		}
		w.WriteHeader(e.Status)
		return
	}
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(errorBody{Errors: []errorEntry{entry}})
}

// DecodeError reads an OCI error from resp — its body, or HeaderError for
// an answer without one — into an *Error (best effort), so that a
// component can pass another component's error on.
func DecodeError(resp *http.Response) *Error {
	e := &Error{Status: resp.StatusCode, Code: "UNKNOWN", Message: resp.Status}
	var entry struct {
		Code    string          `json:"code"`
		Message string          `json:"message"`
		Detail  json.RawMessage `json:"detail"`
	}
	var body struct {
		Errors []json.RawMessage `json:"errors"`
	}
	switch {
	case json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 64<<10)).Decode(&body) == nil && len(body.Errors) > 0:
		if json.Unmarshal(body.Errors[0], &entry) != nil {
			return e
		}
	case resp.Header.Get(HeaderError) != "":
		if json.Unmarshal([]byte(resp.Header.Get(HeaderError)), &entry) != nil || entry.Code == "" {
			return e
		}
	default:
		return e
	}
	e.Code, e.Message = entry.Code, entry.Message
	if len(entry.Detail) > 0 && string(entry.Detail) != "null" {
		e.Detail = entry.Detail
	}
	return e
}
