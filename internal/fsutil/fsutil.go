// Package fsutil holds the one way Shoal writes small files: atomically.
package fsutil

import (
	"os"
	"path/filepath"
)

// WriteFileAtomic writes data to path so that readers see either the old
// file or the whole new one, never a part: a temporary file in tmpDir (on
// the same filesystem; "" means path's directory) is synced, then renamed.
// The file is private to its owner (0600).
func WriteFileAtomic(path string, data []byte, tmpDir string) error {
	return writeFileAtomic(path, data, tmpDir, 0)
}

// WriteFileAtomicPerm is WriteFileAtomic with the file's permission bits
// (for files others read: config drop-ins, certificates).
func WriteFileAtomicPerm(path string, data []byte, perm os.FileMode) error {
	return writeFileAtomic(path, data, "", perm)
}

func writeFileAtomic(path string, data []byte, tmpDir string, perm os.FileMode) error {
	if tmpDir == "" {
		tmpDir = filepath.Dir(path)
	}
	tmp, err := os.CreateTemp(tmpDir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if err == nil && perm != 0 {
		err = tmp.Chmod(perm)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}
