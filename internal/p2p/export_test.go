package p2p

import (
	"testing"

	"github.com/shoal-dev/shoal/internal/store"
)

// StartDownload is startDownload for the package's external tests (those
// that need a real tracker, which imports this package).
func StartDownload(t *testing.T, n *Node, blob []byte, mi *MetaInfo) (*Swarm, *store.Download) {
	t.Helper()
	return startDownload(t, n, blob, mi)
}

// BlobMeta is testBlobMeta for the package's external tests.
func BlobMeta(t *testing.T, size, pieceLen int64) ([]byte, *MetaInfo) {
	t.Helper()
	return testBlobMeta(t, size, pieceLen)
}
