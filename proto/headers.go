package proto

// Headers exchanged between roles (and with registry clients).
const (
	// HeaderError carries the OCI error of an answer to HEAD, which has no
	// body: the JSON of one entry of the error body ({"code","message"}). A
	// component that asked another with HEAD (the build-index resolving a
	// tag through an origin) passes the reason on with it, and `curl -I`
	// shows it.
	HeaderError = "X-Shoal-Error"
	// HeaderPieceLength names the piece length of the hashes an origin
	// streams (PatternPieces).
	HeaderPieceLength = "X-Shoal-Piece-Length"
	// HeaderPieceHash names the kind of the hashes an origin streams
	// (QueryHash); absent, SHA-1.
	HeaderPieceHash = "X-Shoal-Piece-Hash"
	// HeaderInfoHash is the hex info-hash of the metainfo or torrent an
	// origin answers.
	HeaderInfoHash = "X-Shoal-Info-Hash"
	// HeaderStale is "true" on a build-index answer that is a stale tag
	// (upstream could not be asked).
	HeaderStale = "X-Shoal-Stale"
	// HeaderContentDigest is the distribution spec's digest header.
	HeaderContentDigest = "Docker-Content-Digest"
	// HeaderAPIVersion is what GET /v2/ answers to say it is a registry.
	HeaderAPIVersion = "Docker-Distribution-API-Version"
	// APIVersion is the value of HeaderAPIVersion.
	APIVersion = "registry/2.0"
)

// Content types.
const (
	ContentTypeJSON        = "application/json"
	ContentTypeOctetStream = "application/octet-stream"
	// ContentTypeTorrent is the type of live metainfo and standard torrents.
	ContentTypeTorrent = "application/x-bittorrent"
)
