package proto

import "github.com/opencontainers/go-digest"

// TagList is the tag list of a repository: the distribution spec's
// tags/list answer, which origins and build-indexes answer too.
type TagList struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
}

// TagInfo is what the build-index knows of a tag (its GET answer and PUT
// body), and what a manifest's headers say of it.
type TagInfo struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"media_type"`
	Size      int64         `json:"size"`
}

// BlobFile is a bencoded file the tracker and origins serve of a blob.
type BlobFile string

const (
	// FileMetainfo is the live metainfo (piece names, no announce), for
	// Shoal nodes.
	FileMetainfo BlobFile = "metainfo"
	// FileTorrent is the standard single-file torrent, for any BitTorrent
	// client.
	FileTorrent BlobFile = "torrent"
)
