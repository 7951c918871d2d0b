package localregistry

import (
	"bytes"
	"io"
	"testing"
	"testing/iotest"
)

func TestRandomReaderMatchesRandomBytes(t *testing.T) {
	for _, size := range []int64{0, 1, 7, 8, 9, 4096 + 5, 1 << 20} {
		want := RandomBytes(size, 9)
		got, err := io.ReadAll(iotest.OneByteReader(NewRandomReader(size, 9)))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("size %d: one-byte reads differ (err %v)", size, err)
		}
		got, err = io.ReadAll(NewRandomReader(size, 9))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("size %d: bulk reads differ (err %v)", size, err)
		}
	}
}
