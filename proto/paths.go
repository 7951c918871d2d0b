package proto

import (
	"net/url"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

// URL parameters of the patterns below. {ns} is a repository, path-escaped
// as one segment ("library%2Fubuntu"), prefixed with the registry host when
// it is not the default upstream ("ghcr.io%2Forg%2Fapp").
const (
	ParamNamespace = "ns"
	ParamDigest    = "digest"
	ParamRef       = "ref" // a tag or a digest
	ParamTag       = "tag"

	// QueryFrom is the first piece PatternPieces answers.
	QueryFrom = "from"
	// QueryHash is the kind of piece hash PatternPieces answers: "sha1"
	// (the default) or "sha256-chain" (p2p.HashChain). The answer names
	// it in HeaderPieceHash; an origin that names none sent SHA-1s.
	QueryHash = "hash"
	// QueryNamespace is containerd's mirror parameter on the agent's /v2/
	// API: the registry host the repository belongs to.
	QueryNamespace = "ns"
)

// Chi patterns of every endpoint between roles. Servers register these;
// clients build the matching URLs with the functions below.
const (
	// Tracker: the BitTorrent HTTP announce (BEP 3).
	PatternAnnounce = "/announce"

	// Tracker and origin: a blob's live metainfo and standard torrent.
	PatternBlob     = "/namespace/{ns}/blobs/{digest}"
	PatternMetainfo = PatternBlob + "/" + string(FileMetainfo)
	PatternTorrent  = PatternBlob + "/" + string(FileTorrent)
	// Origin: the blob's piece hashes, streamed from ?from=K on.
	PatternPieces = PatternBlob + "/pieces"

	// Origin: manifests by tag or digest, and the upstream's tag list.
	PatternManifest   = "/namespace/{ns}/manifests/{ref}"
	PatternOriginTags = "/namespace/{ns}/tags/list"

	// Build-index: the tags of a repository, one tag (GET, PUT).
	PatternTags = "/namespace/{ns}/tags"
	PatternTag  = "/namespace/{ns}/tags/{tag}"

	// Agent: the OCI distribution pull API (the agent routes all of /v2/
	// itself; see SplitV2).
	PatternV2     = "/v2"
	PatternV2Tree = "/v2/*"
)

// AnnounceURL is the announce URL of the tracker at base.
func AnnounceURL(base string) string { return trim(base) + PatternAnnounce }

// BlobURL is the URL of blob d of ns on the origin at base.
func BlobURL(base, ns string, d digest.Digest) string {
	return trim(base) + "/namespace/" + url.PathEscape(ns) + "/blobs/" + url.PathEscape(d.String())
}

// BlobFileURL is the URL of the metainfo or torrent of blob d of ns on the
// tracker or origin at base.
func BlobFileURL(base string, kind BlobFile, ns string, d digest.Digest) string {
	return BlobURL(base, ns, d) + "/" + url.PathEscape(string(kind))
}

// MetainfoURL is the URL of the live metainfo of blob d of ns.
func MetainfoURL(base, ns string, d digest.Digest) string {
	return BlobFileURL(base, FileMetainfo, ns, d)
}

// TorrentURL is the URL of the standard torrent of blob d of ns.
func TorrentURL(base, ns string, d digest.Digest) string {
	return BlobFileURL(base, FileTorrent, ns, d)
}

// PiecesURL is the URL of the piece hashes of blob d of ns, from piece
// from on.
func PiecesURL(base, ns string, d digest.Digest, from int) string {
	return BlobURL(base, ns, d) + "/pieces?" + QueryFrom + "=" + strconv.Itoa(from)
}

// ManifestURL is the URL of manifest ref (a tag or a digest) of ns on the
// origin at base.
func ManifestURL(base, ns, ref string) string {
	return trim(base) + "/namespace/" + url.PathEscape(ns) + "/manifests/" + url.PathEscape(ref)
}

// OriginTagsURL is the URL of the upstream's tag list of ns on the origin
// at base.
func OriginTagsURL(base, ns string) string {
	return trim(base) + "/namespace/" + url.PathEscape(ns) + "/tags/list"
}

// TagsURL is the URL of the tags of ns on the build-index at base.
func TagsURL(base, ns string) string {
	return trim(base) + "/namespace/" + url.PathEscape(ns) + "/tags"
}

// TagURL is the URL of tag of ns on the build-index at base.
func TagURL(base, ns, tag string) string {
	return TagsURL(base, ns) + "/" + url.PathEscape(tag)
}

// V2BlobURL is the URL of blob d of repository name on the registry (an
// agent, or an upstream) at base.
func V2BlobURL(base, name string, d digest.Digest) string {
	return trim(base) + PatternV2 + "/" + name + "/blobs/" + d.String()
}

// V2ManifestURL is the URL of manifest ref of repository name on the
// registry at base.
func V2ManifestURL(base, name, ref string) string {
	return trim(base) + PatternV2 + "/" + name + "/manifests/" + ref
}

// V2TagsPath is the path of the tag list of repository name, with query q
// (pagination: n, last; the mirror's ns) when it is not empty.
func V2TagsPath(name string, q url.Values) string {
	p := PatternV2 + "/" + name + "/tags/list"
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	return p
}

// V2 kinds of endpoint under /v2/<name>/, as SplitV2 reports them.
const (
	V2Blobs     = "blobs"
	V2Uploads   = "blobs/uploads"
	V2Manifests = "manifests"
	V2Tags      = "tags"
)

// SplitV2 splits a /v2/ path into the repository name, the kind (V2Blobs,
// V2Uploads, V2Manifests, V2Tags) and the rest ("<digest>", "<ref>",
// "list"). The name may hold slashes, so the last marker wins.
func SplitV2(p string) (name, kind, rest string, ok bool) {
	p = strings.TrimPrefix(p, PatternV2+"/")
	for _, k := range []string{V2Uploads, V2Blobs, V2Manifests, V2Tags} {
		m := "/" + k
		if k != V2Uploads {
			m += "/"
		}
		if i := strings.LastIndex(p, m); i > 0 {
			return p[:i], k, p[i+len(m):], true
		}
	}
	return "", "", "", false
}

func trim(base string) string { return strings.TrimRight(base, "/") }
