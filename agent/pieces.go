package agent

import (
	"bufio"
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/p2p"
)

// fetchPieces fills hashes with blob d's piece hashes from the origins, in
// ring order (the origin that owns d is the one fetching it, and streams
// each hash as soon as it has it). A stream that breaks resumes on the next
// origin from the hashes already known; when every origin has failed the
// list fails, and the swarm falls back to HTTP at once (see watch).
func (a *Agent) fetchPieces(ctx context.Context, ns string, d digest.Digest, hashes *p2p.PieceHashes) {
	var errs []error
	for _, o := range a.cluster.origins.Pick(d.String(), 0) {
		err := a.piecesFrom(ctx, o, ns, d, hashes)
		if err == nil || ctx.Err() != nil {
			return
		}
		a.log.Warn("piece hashes from origin failed, trying the next", "origin", o, "digest", d, "err", err)
		errs = append(errs, err)
		var he *httpx.Error
		if errors.As(err, &he) && he.Status >= 400 && he.Status < 500 {
			break // the origin's final word (e.g. the blob is unknown)
		}
	}
	hashes.Fail(fmt.Errorf("every origin failed: %w", errors.Join(errs...)))
}

func (a *Agent) piecesFrom(ctx context.Context, o, ns string, d digest.Digest, hashes *p2p.PieceHashes) error {
	from, _, _ := hashes.State()
	u := fmt.Sprintf("%s/namespace/%s/blobs/%s/pieces?from=%d", o, url.PathEscape(ns), d, from)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := a.fallbackClient.Do(req)
	if err != nil {
		return fmt.Errorf("origin %s: %w", o, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return httpx.DecodeError(resp)
	}
	if pl := resp.Header.Get(p2p.HeaderPieceLength); pl != strconv.FormatInt(hashes.PieceLength(), 10) {
		// Origins configured with different piece lengths: these hashes
		// belong to another swarm.
		return fmt.Errorf("origin %s: piece hashes for %s-byte pieces, the metainfo has %d", o, pl, hashes.PieceLength())
	}
	br := bufio.NewReaderSize(resp.Body, 4096)
	var sum [sha1.Size]byte
	for !hashes.Complete() {
		if _, err := io.ReadFull(br, sum[:]); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("origin %s: piece hashes of %s: %w", o, d, err)
		}
		if err := hashes.Add(sum[:]); err != nil {
			return err
		}
	}
	return nil
}
