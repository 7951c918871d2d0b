package httpx

import (
	"errors"
	"io/fs"
	"net/http"
	"syscall"
)

// DiskError turns a failure of a node's blob store into what the client
// sees: 507 when the disk is full, 500 naming the cause when the store cannot
// be written (read-only, permissions, I/O errors). Other errors pass through;
// the log keeps the full error either way.
func DiskError(err error) error {
	var msg string
	status := http.StatusInternalServerError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.ENOSPC):
		status, msg = http.StatusInsufficientStorage, "the node's blob cache has no space left for this blob"
	case errors.Is(err, syscall.EROFS):
		msg = "the node's blob cache is on a read-only filesystem"
	case errors.Is(err, fs.ErrPermission):
		msg = "the node's blob cache is not writable (permission denied)"
	case errors.Is(err, syscall.EIO):
		msg = "the node's blob cache has an I/O error"
	default:
		return err
	}
	return Wrap(err, status, CodeUnavailable, msg)
}
