package bench

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/internal/procstat"
)

// Floor is what this machine's CPU takes to move bytes once through each
// step every byte a swarm delivers must take, whatever the protocol: a
// peer reads it from its file and sends it over TCP, the agent writes it
// to its file, hashes it (sha256, once: the engine checks pieces along the
// blob's sha256 chain, p2p.HashChain) and sends
// it to its client (whose read, in a process of its own as the swarm
// rows' clients, is not counted). Measured in the same run as the swarm
// rows, it says how much of a row's core-seconds per GiB is the machine
// (its system calls and copies), not the swarm's per-message work.
type Floor struct {
	Bytes int64 `json:"bytes"`
	// Core-seconds per GiB of each step, and their sum.
	PreadSecondsPerGiB    float64 `json:"pread_cpu_seconds_per_gib"`
	TCPSecondsPerGiB      float64 `json:"tcp_cpu_seconds_per_gib"` // 64 KiB writes, read at the other end
	PwriteSecondsPerGiB   float64 `json:"pwrite_cpu_seconds_per_gib"`
	SHA1SecondsPerGiB     float64 `json:"sha1_cpu_seconds_per_gib"` // 32 KiB pieces: the library engine's check, not in the sum since 2026-12-06
	SHA256SecondsPerGiB   float64 `json:"sha256_cpu_seconds_per_gib"`
	SendfileSecondsPerGiB float64 `json:"sendfile_cpu_seconds_per_gib"` // file to an HTTP client in another process, as an agent to containerd
	SecondsPerGiB         float64 `json:"cpu_seconds_per_gib"`
	// Exchanges are the least a protocol that asks for each block pays per
	// GiB, at the block sizes of the scale set's pieces (not in the sum).
	Exchanges []Exchange `json:"exchanges,omitempty"`
}

// Exchange is a floor of the messages: bytes moved as a capped swarm moves
// them, each block asked for by a request and sent back alone, on
// connections that idle between blocks so that every message wakes its
// reader (exchange). It repeats the pread, TCP and pwrite steps at that
// block size and adds a request, a header and two wake-ups a block; with
// the hashes and the client's copy it is what each delivered GiB costs
// before a single Have, hash stream or lock of the swarm's own.
type Exchange struct {
	BlockBytes    int     `json:"block_bytes"`
	Conns         int     `json:"conns"`
	SecondsPerGiB float64 `json:"cpu_seconds_per_gib"`
	// With sha256 and the sendfile to a client: the least a delivered GiB
	// costs in blocks (one piece each) of this size.
	DeliveredSecondsPerGiB float64 `json:"delivered_cpu_seconds_per_gib"`
}

// The exchanges' block sizes: the 16 MiB and 64 MiB scale rows' pieces,
// each one block. Their connections each ask for a block every
// exchangeGap, about what 64 connections of a capped swarm carry at a few
// MB/s; the bytes are capped so that the exchanges take seconds.
var exchangeBlocks = []int{32 << 10, 128 << 10}

const (
	exchangeConns    = 64
	exchangeGap      = 20 * time.Millisecond
	exchangeMaxBytes = 256 << 20
)

// floorBlock is a wire block (p2p's request size); floorPiece the piece
// length the 16 MiB scale rows use.
const (
	floorBlock = 64 << 10
	floorPiece = 32 << 10
)

// MeasureFloor times each step over size bytes in files under dir, one
// step at a time (nothing else should run in the process meanwhile).
func MeasureFloor(ctx context.Context, dir string, size int64) (*Floor, error) {
	size = max(floorBlock, size/floorBlock*floorBlock)
	src, err := os.CreateTemp(dir, "floor-src-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(src.Name())
	defer src.Close()
	buf := make([]byte, floorBlock)
	if _, err := rand.Read(buf); err != nil {
		return nil, err
	}
	for off := int64(0); off < size; off += floorBlock {
		if _, err := src.WriteAt(buf, off); err != nil {
			return nil, fmt.Errorf("floor: %w", err)
		}
	}
	gib := float64(size) / (1 << 30)
	f := &Floor{Bytes: size}
	step := func(dst *float64, run func() error) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		c0 := procstat.CPUSeconds()
		if err := run(); err != nil {
			return fmt.Errorf("floor: %w", err)
		}
		*dst = (procstat.CPUSeconds() - c0) / gib
		f.SecondsPerGiB += *dst
		return nil
	}
	blocks := func(do func(b []byte, off int64) error) error {
		for off := int64(0); off < size; off += floorBlock {
			if err := do(buf, off); err != nil {
				return err
			}
		}
		return nil
	}
	if err := step(&f.PreadSecondsPerGiB, func() error {
		return blocks(func(b []byte, off int64) error { _, err := src.ReadAt(b, off); return err })
	}); err != nil {
		return nil, err
	}
	if err := step(&f.TCPSecondsPerGiB, func() error {
		return overTCP(func(w net.Conn) error {
			return blocks(func(b []byte, _ int64) error { _, err := w.Write(b); return err })
		})
	}); err != nil {
		return nil, err
	}
	dst, err := os.Create(filepath.Join(dir, "floor-dst"))
	if err != nil {
		return nil, err
	}
	defer os.Remove(dst.Name())
	defer dst.Close()
	if err := step(&f.PwriteSecondsPerGiB, func() error {
		return blocks(func(b []byte, off int64) error { _, err := dst.WriteAt(b, off); return err })
	}); err != nil {
		return nil, err
	}
	if err := step(&f.SHA1SecondsPerGiB, func() error {
		return blocks(func(b []byte, _ int64) error {
			for p := 0; p < len(b); p += floorPiece {
				sha1.Sum(b[p : p+floorPiece])
			}
			return nil
		})
	}); err != nil {
		return nil, err
	}
	h := sha256.New()
	if err := step(&f.SHA256SecondsPerGiB, func() error {
		return blocks(func(b []byte, _ int64) error { h.Write(b); return nil })
	}); err != nil {
		return nil, err
	}
	if err := sendfileStep(ctx, src, size, step, &f.SendfileSecondsPerGiB); err != nil {
		return nil, err
	}
	// The engine's agents hash each byte once, along the blob's sha256
	// chain: SHA-1 is measured (the library's check) but no step of theirs.
	f.SecondsPerGiB -= f.SHA1SecondsPerGiB
	deliver := f.SHA256SecondsPerGiB + f.SendfileSecondsPerGiB
	for _, blk := range exchangeBlocks {
		n := min(size, exchangeMaxBytes) / int64(blk) * int64(blk)
		if n == 0 {
			continue
		}
		xdst, err := os.Create(filepath.Join(dir, "floor-exchange"))
		if err != nil {
			return nil, err
		}
		c0 := procstat.CPUSeconds()
		err = exchange(ctx, src, xdst, n, blk, exchangeConns, exchangeGap)
		c := procstat.CPUSeconds() - c0
		xdst.Close()
		os.Remove(xdst.Name())
		if err != nil {
			return nil, fmt.Errorf("floor: exchange of %d-byte blocks: %w", blk, err)
		}
		x := Exchange{BlockBytes: blk, Conns: exchangeConns, SecondsPerGiB: c / (float64(n) / (1 << 30))}
		x.DeliveredSecondsPerGiB = x.SecondsPerGiB + deliver
		f.Exchanges = append(f.Exchanges, x)
	}
	return f, nil
}

// sendfileStep serves src's size bytes over HTTP to a client in a client
// process (clients.go), as an agent serves a blob to containerd: the
// step's CPU is the server's sendfile, not the client's read.
func sendfileStep(ctx context.Context, src *os.File, size int64, step func(*float64, func() error) error, dst *float64) error {
	h := crc32.New(castagnoli)
	if _, err := io.Copy(h, io.NewSectionReader(src, 0, size)); err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	want := copyCheck{size: size, crc: h.Sum32()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.Header().Set("Content-Type", "application/octet-stream")
		if _, err := src.Seek(0, io.SeekStart); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		io.Copy(w, io.LimitReader(src, size)) // a file behind a LimitedReader: sendfile
	})}
	go srv.Serve(ln)
	defer srv.Close()
	clients, err := startClients(ctx, os.Stderr)
	if err != nil {
		return err
	}
	err = step(dst, func() error {
		_, _, err := clients.pull(ctx, "http://"+ln.Addr().String()+"/blob", want, 0)
		return err
	})
	if _, cerr := clients.close(); err == nil {
		err = cerr
	}
	return err
}

// exchange copies the first size bytes of src to dst in blocks of blk
// (size a multiple of it) over conns loopback connections, the way p2p's
// engine moves a block under a cap: the asker writes a 17-byte request
// (length, id, index, begin, length, as BitTorrent's), the far end preads
// the block and writes it behind a 13-byte header in one writev, and the
// asker reads it, pwrites it and waits gap before its next request.
func exchange(ctx context.Context, src, dst *os.File, size int64, blk, conns int, gap time.Duration) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	var (
		wg   sync.WaitGroup // the askers
		mu   sync.Mutex
		errs []error
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	serve := func(c net.Conn) {
		defer c.Close()
		req := make([]byte, 17)
		b := make([]byte, 13+blk)
		for {
			if _, err := io.ReadFull(c, req); err != nil {
				if !errors.Is(err, io.EOF) {
					fail(err)
				}
				return
			}
			binary.BigEndian.PutUint32(b[0:4], uint32(9+blk))
			b[4] = 7 // a piece message: index and begin as asked
			copy(b[5:13], req[5:13])
			idx := int64(binary.BigEndian.Uint32(req[5:9]))
			if _, err := src.ReadAt(b[13:], idx*int64(blk)); err != nil {
				fail(err)
				return
			}
			if _, err := (&net.Buffers{b[:13], b[13:]}).WriteTo(c); err != nil {
				fail(err)
				return
			}
		}
	}
	var servers sync.WaitGroup
	servers.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed once the askers are done
			}
			servers.Go(func() { serve(c) })
		}
	})
	blocks := int(size / int64(blk))
	conns = min(conns, blocks)
	for k := range conns {
		wg.Go(func() {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				fail(err)
				return
			}
			defer c.Close()
			req := make([]byte, 17)
			binary.BigEndian.PutUint32(req[0:4], 13)
			req[4] = 6
			binary.BigEndian.PutUint32(req[13:17], uint32(blk))
			b := make([]byte, 13+blk)
			// Spread the connections over the gap, as a swarm's are.
			t := time.NewTimer(gap * time.Duration(k) / time.Duration(conns))
			defer t.Stop()
			for i := k; i < blocks; i += conns {
				select {
				case <-t.C:
				case <-ctx.Done():
					fail(ctx.Err())
					return
				}
				binary.BigEndian.PutUint32(req[5:9], uint32(i))
				if _, err := c.Write(req); err != nil {
					fail(err)
					return
				}
				if _, err := io.ReadFull(c, b); err != nil {
					fail(err)
					return
				}
				if _, err := dst.WriteAt(b[13:], int64(i)*int64(blk)); err != nil {
					fail(err)
					return
				}
				t.Reset(gap)
			}
		})
	}
	wg.Wait()
	ln.Close()
	servers.Wait()
	return errors.Join(errs...)
}

// overTCP runs send on one end of a loopback connection while the other
// end reads everything in 64 KiB reads.
func overTCP(send func(w net.Conn) error) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	read := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			read <- err
			return
		}
		defer c.Close()
		b := make([]byte, floorBlock)
		for {
			if _, err := c.Read(b); err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				read <- err
				return
			}
		}
	}()
	w, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return err
	}
	err = send(w)
	w.Close()
	return errors.Join(err, <-read)
}
