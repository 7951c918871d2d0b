package bench

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"github.com/shoal-dev/shoal/internal/procstat"
)

// Floor is what this machine's CPU takes to move bytes once through each
// step every byte a swarm delivers must take, whatever the protocol: a
// peer reads it from its file and sends it over TCP, the agent writes it
// to its file, hashes it (SHA-1 per piece, sha256 of the blob) and sends
// it to its client, which reads it. Measured in the same run as the swarm
// rows, it says how much of a row's core-seconds per GiB is the machine
// (its system calls and copies), not the swarm's per-message work.
type Floor struct {
	Bytes int64 `json:"bytes"`
	// Core-seconds per GiB of each step, and their sum.
	PreadSecondsPerGiB    float64 `json:"pread_cpu_seconds_per_gib"`
	TCPSecondsPerGiB      float64 `json:"tcp_cpu_seconds_per_gib"` // 64 KiB writes, read at the other end
	PwriteSecondsPerGiB   float64 `json:"pwrite_cpu_seconds_per_gib"`
	SHA1SecondsPerGiB     float64 `json:"sha1_cpu_seconds_per_gib"` // 32 KiB pieces
	SHA256SecondsPerGiB   float64 `json:"sha256_cpu_seconds_per_gib"`
	SendfileSecondsPerGiB float64 `json:"sendfile_cpu_seconds_per_gib"` // file to a TCP reader, as an agent to its client
	SecondsPerGiB         float64 `json:"cpu_seconds_per_gib"`
}

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
	if err := step(&f.SendfileSecondsPerGiB, func() error {
		return overTCP(func(w net.Conn) error {
			if _, err := src.Seek(0, io.SeekStart); err != nil {
				return err
			}
			_, err := w.(*net.TCPConn).ReadFrom(io.LimitReader(src, size))
			return err
		})
	}); err != nil {
		return nil, err
	}
	return f, nil
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
