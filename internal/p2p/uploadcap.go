package p2p

import (
	"github.com/anacrolix/torrent/bencode"
	pp "github.com/anacrolix/torrent/peer_protocol"
)

// Agents tell each other their upload cap, in the extension protocol's
// handshake (BEP 10, the only extension message the engine speaks), and an
// agent's upload turns serve the peers whose cap is under half its own after
// the others (peerConn.behind). A piece multiplies in the swarm at the rate
// its holder passes it on: at U = R, with a quarter of 64 agents on links at
// R/4, the turns' rule of the peer holding least first gave the slow agents
// (who hold least) the fast ones' upload, which the fast agents, with 2 % to
// spare, then lacked (p50 1.08-1.12x over their own bounds). The slow
// agents still get every block the fast ones have no faster peer waiting
// for, and all of their upload once those are done; their requests that
// wait at a faster peer are moved to other holders after the usual stall
// time, but the faster peer is not snubbed for it (a snub, 30 s without
// requests, left a slow agent idle once the fast ones had finished).

// extHandshake is the extension handshake's dictionary. M (the extension
// messages spoken) is empty: peers send us nothing but their handshake.
type extHandshake struct {
	M  map[string]int `bencode:"m"`
	V  string         `bencode:"v,omitempty"`
	Up int64          `bencode:"shoal_up,omitempty"` // the upload cap, bytes per second (0: none)
}

// extHandshakeMessage is the handshake an engine with upload cap up
// (bytes per second, 0: none) sends the peers that speak the extension
// protocol.
func extHandshakeMessage(up int64) pp.Message {
	b, err := bencode.Marshal(extHandshake{M: map[string]int{}, V: "Shoal", Up: up})
	if err != nil {
		panic(err) // a fixed struct of a map, a string and an int
	}
	return pp.Message{Type: pp.Extended, ExtendedID: pp.HandshakeExtendedID, ExtendedPayload: b}
}

// gotExtended takes the peer's upload cap from its extension handshake.
// Other extension messages, and a handshake that does not parse, are
// ignored: the peer loses only its place in our turns.
func (c *peerConn) gotExtended(m pp.Message) {
	if m.ExtendedID != pp.HandshakeExtendedID {
		return
	}
	var h extHandshake
	if err := bencode.Unmarshal(m.ExtendedPayload, &h); err != nil || h.Up < 0 {
		return
	}
	c.peerUp.Store(h.Up)
}

// slower reports whether the peer told us an upload cap under half ours:
// our upload turns serve it after the others.
func (c *peerConn) slower() bool {
	up := c.peerUp.Load()
	return up > 0 && c.t.e.upCap > 0 && 2*up < c.t.e.upCap
}

// faster reports whether the peer told us an upload cap over twice ours:
// it serves us after the others, and a request that waits there long is
// no stall (transfer.tick moves it, without snubbing the peer).
func (c *peerConn) faster() bool {
	up := c.peerUp.Load()
	return c.t.e.upCap > 0 && up > 2*c.t.e.upCap
}
