package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/proto"
)

// fetchPieces fills hashes with blob d's piece hashes from the origins, in
// ring order (the origin that owns d is the one fetching it, and streams
// each hash as soon as it has it). A stream that breaks resumes on the next
// origin from the hashes already known; when every origin has failed the
// list fails, and the swarm falls back to HTTP at once (see watch).
func (a *Agent) fetchPieces(ctx context.Context, ns string, d digest.Digest, hashes *p2p.PieceHashes) {
	policy := proto.Policy{Observe: func(o string, err error) {
		if err != nil && ctx.Err() == nil {
			a.log.Warn("piece hashes from origin failed, trying the next", "origin", o, "digest", d, "err", err)
		}
	}}
	oc := proto.OriginClient{Client: proto.Client{HTTP: a.fallbackClient}}
	_, err := proto.Failover(ctx, a.cluster.origins.Pick(d.String(), 0), policy, func(ctx context.Context, o string) (struct{}, error) {
		return struct{}{}, a.piecesFrom(ctx, oc, o, ns, d, hashes)
	})
	if err == nil || ctx.Err() != nil {
		return
	}
	hashes.Fail(fmt.Errorf("every origin failed: %w", err))
}

func (a *Agent) piecesFrom(ctx context.Context, oc proto.OriginClient, o, ns string, d digest.Digest, hashes *p2p.PieceHashes) error {
	from, _, _ := hashes.State()
	want := hashes.Kind()
	resp, err := oc.Pieces(ctx, o, ns, d, from, string(want))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if pl := resp.Header.Get(proto.HeaderPieceLength); pl != strconv.FormatInt(hashes.PieceLength(), 10) {
		// Origins configured with different piece lengths: these hashes
		// belong to another swarm.
		return fmt.Errorf("origin %s: piece hashes for %s-byte pieces, the metainfo has %d", o, pl, hashes.PieceLength())
	}
	kind, err := p2p.ParseHashKind(resp.Header.Get(proto.HeaderPieceHash))
	if err != nil {
		return fmt.Errorf("origin %s: %w", o, err)
	}
	if kind != want {
		// An origin older than sha256 chains sends SHA-1s: the engine
		// checks those (and hashes the blob again in order) as before.
		if err := hashes.Adopt(kind); err != nil {
			return fmt.Errorf("origin %s: %w", o, err)
		}
		a.log.Info("origin sends no sha256 chain; checking pieces with SHA-1", "origin", o, "digest", d)
	}
	br := bufio.NewReaderSize(resp.Body, 4096)
	sum := make([]byte, kind.Size())
	for !hashes.Complete() {
		if _, err := io.ReadFull(br, sum); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("origin %s: piece hashes of %s: %w", o, d, err)
		}
		if err := hashes.Add(sum); err != nil {
			return err
		}
	}
	return nil
}
