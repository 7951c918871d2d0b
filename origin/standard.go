package origin

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/internal/p2p/superseed"
	"github.com/shoal-dev/shoal/internal/store"
	"github.com/shoal-dev/shoal/proto"
)

// An origin seeds the standard torrent of every blob it holds complete and
// verified (see p2p/standard.go) with the same super-seeder as the live
// torrents: it speaks the plain wire protocol that every BitTorrent client
// falls back to, and reveals pieces with Have messages, which any client
// follows. The standard torrent exists only once the blob is complete: its
// info carries every piece's SHA-1.

// seedStandard seeds the standard torrent of d, whose piece hashes are
// complete and whose blob is committed, and records it in sd. The blob is
// read from the store (verified against its digest when it comes from an
// earlier run), never from a download.
func (o *Origin) seedStandard(d digest.Digest, sd *seeded) error {
	if std := sd.std.Load(); std != nil && o.seed.Seeding(std.InfoHash) {
		return nil
	}
	std, err := p2p.BuildStandard(d, sd.mi.Info.Length, sd.hashes)
	if err != nil {
		return err
	}
	file, err := o.store.Open(d)
	if err != nil {
		return err
	}
	if err := o.seed.Seed(std, file, nil, func() { file.Close() }); err != nil {
		file.Close()
		if errors.Is(err, superseed.ErrClosed) {
			return nil // the origin is stopping
		}
		if !errors.Is(err, p2p.ErrInSwarm) {
			return err
		}
	}
	sd.std.Store(std)
	return nil
}

// standard returns the standard torrent of d if the origin holds d complete
// and verified; else a 409 while d still arrives from upstream, or a 404.
// It never starts an upstream fetch.
func (o *Origin) standard(d digest.Digest) (*p2p.MetaInfo, error) {
	if sd, ok := o.seeds.Get(d); ok {
		if std := sd.std.Load(); std != nil && o.seed.Seeding(std.InfoHash) {
			return std, nil
		}
	}
	if o.fetches.Running(d) {
		return nil, httpx.Errorf(http.StatusConflict, httpx.CodeBlobIncomplete,
			"blob %s is still arriving from upstream: its standard torrent exists once the whole blob is verified", d)
	}
	if _, err := o.store.Stat(d); err != nil {
		return nil, notHeld(d, err)
	}
	sd, err := o.seedStored(d) // verifies a copy from an earlier run
	if err != nil {
		return nil, notHeld(d, err)
	}
	if err := o.seedStandard(d, sd); err != nil {
		return nil, notHeld(d, err)
	}
	return sd.std.Load(), nil
}

// notHeld is the answer for a blob the origin does not hold (or no longer
// holds: a stored copy that failed verification was removed).
func notHeld(d digest.Digest, err error) error {
	var he *httpx.Error
	switch {
	case errors.As(err, &he):
		return he
	case errors.Is(err, store.ErrNotFound):
		return httpx.Wrap(err, http.StatusNotFound, httpx.CodeBlobUnknown,
			"this origin does not hold blob "+d.String()+"; a pull through an agent (or a GET of its metainfo) fetches it")
	}
	return httpx.DiskError(err)
}

// handleTorrent answers the standard torrent (.torrent) of a blob the origin
// holds complete; the tracker adds its announce URL and hands it to any
// BitTorrent client.
func (o *Origin) handleTorrent(w http.ResponseWriter, r *http.Request) {
	_, d, err := params(r)
	if err != nil {
		writeErr(w, r, err)
		return
	}
	std, err := o.standard(d)
	if err != nil {
		httpx.WriteError(w, r, err)
		return
	}
	raw := std.Raw()
	w.Header().Set("Content-Type", proto.ContentTypeTorrent)
	w.Header().Set("Content-Length", strconv.Itoa(len(raw)))
	w.Header().Set(proto.HeaderInfoHash, std.InfoHash.HexString())
	_, _ = w.Write(raw)
}
