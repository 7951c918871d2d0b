//go:build !linux

package store

import "os"

// reserve sizes f to size (a sparse file: no portable way to allocate).
func reserve(f *os.File, size int64) error { return f.Truncate(size) }
