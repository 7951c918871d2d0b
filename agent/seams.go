package agent

import (
	"context"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/internal/store"
)

// What a pull consumes of the swarm side, narrowed to what pull.go uses, so
// that a pull and its fallback can be tested without a cluster (a swarm
// that stalls, one that fails). The HTTP side is blobSource (fallback.go).

// metainfoSource gives a blob's live metainfo: the trackers
// (metainfoClient). A 4xx *httpx.Error is the final answer; a 5xx one
// means the tracker answered but the blob's origins failed; any other
// error, that no tracker answered.
type metainfoSource interface {
	get(ctx context.Context, ns string, d digest.Digest) (*p2p.MetaInfo, error)
}

// swarmJoiner starts swarm downloads: the P2P node (nodeSwarms).
type swarmJoiner interface {
	// Download joins the swarm of mi, writing pieces checked against
	// hashes into dl, and takes over the caller's reference to dl (see
	// p2p.Node.Download).
	Download(mi *p2p.MetaInfo, dl *store.Download, hashes *p2p.PieceHashes) (swarmDownload, error)
}

// swarmDownload is a running swarm download as a pull watches it.
type swarmDownload interface {
	// BytesCompleted counts verified bytes held (progress, for stalls).
	BytesCompleted() int64
	// Close leaves the swarm and releases the download's reference.
	Close()
}

// nodeSwarms is the real swarmJoiner.
type nodeSwarms struct{ n *p2p.Node }

func (s nodeSwarms) Download(mi *p2p.MetaInfo, dl *store.Download, hashes *p2p.PieceHashes) (swarmDownload, error) {
	sw, err := s.n.Download(mi, dl, hashes)
	if err != nil {
		return nil, err // not a nil *p2p.Swarm in an interface
	}
	return sw, nil
}
