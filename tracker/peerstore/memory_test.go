package peerstore_test

import (
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tracker/peerstore"
	"github.com/shoal-dev/shoal/tracker/peerstore/storetest"
)

func TestMemoryConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) peerstore.Store {
		return peerstore.NewMemory(storetest.TTL, now)
	})
}
