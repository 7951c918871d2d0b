package wire

import (
	"encoding/binary"
	"fmt"

	pp "github.com/anacrolix/torrent/peer_protocol"
)

// Decode parses a message body as ReadMessages hands it over (not a
// keep-alive: the body is not empty). A block's data (m.Piece) and an
// extension message's payload are slices of body, not copies. Messages the
// engines do not speak (DHT port, fast and v2 messages) come back with their
// type only.
func Decode(body []byte) (pp.Message, error) {
	var m pp.Message
	if len(body) == 0 {
		m.Keepalive = true
		return m, nil
	}
	m.Type = pp.MessageType(body[0])
	p := body[1:]
	u32 := func(k int) pp.Integer { return pp.Integer(binary.BigEndian.Uint32(p[4*k:])) }
	want := func(n int) error {
		if len(p) != n {
			return fmt.Errorf("wire: %v message of %d bytes, want %d", m.Type, len(p), n)
		}
		return nil
	}
	switch m.Type {
	case pp.Choke, pp.Unchoke, pp.Interested, pp.NotInterested, pp.HaveAll, pp.HaveNone:
		return m, want(0)
	case pp.Have, pp.Suggest, pp.AllowedFast:
		if err := want(4); err != nil {
			return m, err
		}
		m.Index = u32(0)
	case pp.Request, pp.Cancel, pp.Reject:
		if err := want(12); err != nil {
			return m, err
		}
		m.Index, m.Begin, m.Length = u32(0), u32(1), u32(2)
	case pp.Piece:
		if len(p) < 8 {
			return m, fmt.Errorf("wire: block message of %d bytes", len(p))
		}
		m.Index, m.Begin, m.Piece = u32(0), u32(1), p[8:]
	case pp.Bitfield:
		m.Bitfield = make([]bool, 8*len(p))
		for i := range m.Bitfield {
			m.Bitfield[i] = p[i/8]&(0x80>>(i%8)) != 0
		}
	case pp.Extended:
		if len(p) < 1 {
			return m, fmt.Errorf("wire: extended message of %d bytes", len(p))
		}
		m.ExtendedID, m.ExtendedPayload = pp.ExtensionNumber(p[0]), p[1:]
	case pp.Port, pp.HashRequest, pp.Hashes, pp.HashReject:
	default:
		return m, fmt.Errorf("wire: unknown message type %d", m.Type)
	}
	return m, nil
}
