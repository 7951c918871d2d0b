package proto

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
	CodeUnknown             = "UNKNOWN" // what an answer without an OCI error decodes to
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

// ErrorBody is the OCI error JSON: {"errors":[{"code","message","detail"}]}.
type ErrorBody struct {
	Errors []ErrorEntry `json:"errors"`
}

// ErrorEntry is one entry of ErrorBody.
type ErrorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// WriteError writes err as OCI error JSON (for HEAD, in HeaderError).
// Errors that are not *Error become 500 UNKNOWN without leaking their text.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Status: http.StatusInternalServerError, Code: CodeUnknown, Message: "internal error", Err: err}
	}
	entry := ErrorEntry{Code: e.Code, Message: e.Message, Detail: e.Detail}
	w.Header().Set("Content-Type", ContentTypeJSON)
	w.Header().Del("Content-Length")
	w.Header().Del(HeaderContentDigest)
	if r != nil && r.Method == http.MethodHead {
		// json.Marshal escapes control characters: the value stays one line.
		if b, err := json.Marshal(entry); err == nil {
			w.Header().Set(HeaderError, string(b))
		}
		w.WriteHeader(e.Status)
		return
	}
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(ErrorBody{Errors: []ErrorEntry{entry}})
}

// DecodeError reads an OCI error from resp — its body, or HeaderError for
// an answer without one — into an *Error (best effort), so that a
// component can pass another component's error on.
func DecodeError(resp *http.Response) *Error {
	e := &Error{Status: resp.StatusCode, Code: CodeUnknown, Message: resp.Status}
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
