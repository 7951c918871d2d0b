package store

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// reserve sizes f to size and allocates its blocks where the filesystem can,
// so that a full disk shows as ENOSPC here, before any byte is fetched,
// rather than halfway through a transfer.
func reserve(f *os.File, size int64) error {
	if size > 0 {
		err := unix.Fallocate(int(f.Fd()), 0, 0, size)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
			return err
		}
	}
	return f.Truncate(size) // no fallocate here: a sparse file
}
