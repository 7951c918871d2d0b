//go:build !linux

package wire

func (rd *reader) readRaw() error { return errNotRaw }
