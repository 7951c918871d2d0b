package peerstore

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisKeyPrefix is where a Redis store keeps its keys unless told otherwise.
const DefaultRedisKeyPrefix = "shoal:tracker:"

// RedisOptions configures a Redis store.
type RedisOptions struct {
	Addr     string // host:port
	Password string
	DB       int
	// KeyPrefix starts every key (DefaultRedisKeyPrefix when empty).
	KeyPrefix string
	// DialTimeout bounds one connection attempt (2s when zero).
	DialTimeout time.Duration
	// OpTimeout bounds each Store call, retries included (1s when zero).
	OpTimeout time.Duration
	// TTL is how long a peer stays listed after its last announce.
	TTL time.Duration
	// Now is the clock that scores expiry (time.Now when nil). Redis's own
	// clock is never used for entries, so replicas and tests agree on it.
	Now func() time.Time
}

// Redis is a Store kept in Redis (6.2 or later), so that tracker replicas
// share one peer graph. Each swarm is three keys sharing a hash tag (one
// Redis Cluster slot):
//
//	<prefix>{<info-hash hex>}:c   sorted set of complete peer ids, scored by expiry (unix ms)
//	<prefix>{<info-hash hex>}:i   the same for incomplete peers
//	<prefix>{<info-hash hex>}:p   hash of peer id -> encoded (flags, port, ip)
//
// Every operation is one Lua script, so one round trip: it first drops the
// members whose expiry has passed by the store's clock (and their hash
// fields), then does its work. An announce also sets the keys' Redis TTL to
// the peer TTL, so a swarm nobody announces to any more vanishes by itself.
type Redis struct {
	client    *redis.Client
	addr      string
	prefix    string
	ttl       int64 // milliseconds
	opTimeout time.Duration
	now       func() time.Time
}

var (
	_ Store     = (*Redis)(nil)
	_ Announcer = (*Redis)(nil)
)

// NewRedis returns a store on the Redis server at o.Addr. It does not
// connect: the first call does, and calls fail (within OpTimeout) while the
// server is unreachable, then succeed again once it is back.
func NewRedis(o RedisOptions) *Redis {
	if o.KeyPrefix == "" {
		o.KeyPrefix = DefaultRedisKeyPrefix
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 2 * time.Second
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = time.Second
	}
	if o.TTL <= 0 {
		o.TTL = time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	client := redis.NewClient(&redis.Options{
		Addr:                  o.Addr,
		Password:              o.Password,
		DB:                    o.DB,
		DialTimeout:           o.DialTimeout,
		ReadTimeout:           o.OpTimeout,
		WriteTimeout:          o.OpTimeout,
		PoolTimeout:           o.OpTimeout,
		ContextTimeoutEnabled: true,
		// One retry replaces a pooled connection that a Redis restart
		// broke; more would only stretch an outage past OpTimeout.
		MaxRetries:    1,
		DialerRetries: 1,
		// The tracker talks plain RESP to one server: no identity
		// handshake, no maintenance push notifications to negotiate.
		DisableIdentity: true,
	})
	return &Redis{
		client:    client,
		addr:      o.Addr,
		prefix:    o.KeyPrefix,
		ttl:       max(1, o.TTL.Milliseconds()),
		opTimeout: o.OpTimeout,
		now:       o.Now,
	}
}

// Close closes the connection pool.
func (r *Redis) Close() error { return r.client.Close() }

// Ping checks that the server answers (for /readiness).
func (r *Redis) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	return r.wrap("ping", r.client.Ping(ctx).Err())
}

// Announce implements Store.
func (r *Redis) Announce(ctx context.Context, infoHash [20]byte, p Peer) error {
	_, _, _, err := r.announce(ctx, infoHash, p, 0)
	return err
}

// AnnounceAndPeers implements Announcer.
func (r *Redis) AnnounceAndPeers(ctx context.Context, infoHash [20]byte, p Peer, n int) ([]Peer, int, int, error) {
	return r.announce(ctx, infoHash, p, n)
}

func (r *Redis) announce(ctx context.Context, infoHash [20]byte, p Peer, n int) ([]Peer, int, int, error) {
	if !p.IP.IsValid() {
		return nil, 0, 0, fmt.Errorf("peerstore: announce of peer %x without an address", p.ID)
	}
	complete := "0"
	if p.Complete {
		complete = "1"
	}
	now := r.now().UnixMilli()
	args := []any{now, now + r.ttl, r.ttl, p.ID[:], encodePeer(p), complete, max(n, 0)}
	return r.run(ctx, "announce", announceScript, infoHash, args)
}

// Remove implements Store.
func (r *Redis) Remove(ctx context.Context, infoHash [20]byte, id [20]byte) error {
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	return r.wrap("remove", removeScript.Run(ctx, r.client, r.keys(infoHash), id[:]).Err())
}

// Peers implements Store.
func (r *Redis) Peers(ctx context.Context, infoHash [20]byte, n int) ([]Peer, error) {
	if n <= 0 {
		return nil, nil
	}
	peers, _, _, err := r.run(ctx, "peers", peersScript, infoHash, []any{r.now().UnixMilli(), n})
	return peers, err
}

// Counts implements Store.
func (r *Redis) Counts(ctx context.Context, infoHash [20]byte) (complete, incomplete int, err error) {
	_, complete, incomplete, err = r.run(ctx, "counts", peersScript, infoHash, []any{r.now().UnixMilli(), 0})
	return complete, incomplete, err
}

// run evaluates a script that answers {complete, incomplete, id, peer, ...}.
func (r *Redis) run(ctx context.Context, op string, s *redis.Script, infoHash [20]byte, args []any) ([]Peer, int, int, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	res, err := s.Run(ctx, r.client, r.keys(infoHash), args...).Slice()
	if err != nil {
		return nil, 0, 0, r.wrap(op, err)
	}
	peers, complete, incomplete, err := decodeReply(res)
	if err != nil {
		return nil, 0, 0, r.wrap(op, err)
	}
	return peers, complete, incomplete, nil
}

func (r *Redis) keys(infoHash [20]byte) []string {
	base := r.prefix + "{" + hex.EncodeToString(infoHash[:]) + "}:"
	return []string{base + "c", base + "i", base + "p"}
}

func (r *Redis) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("peerstore: redis %s: %s: %w", r.addr, op, err)
}

// A peer's hash value: one flags byte (bit 0: complete), the port (big
// endian), then the 4 or 16 address bytes.
func encodePeer(p Peer) []byte {
	b := make([]byte, 3, 19)
	if p.Complete {
		b[0] = 1
	}
	b[1], b[2] = byte(p.Port>>8), byte(p.Port)
	return append(b, p.IP.AsSlice()...)
}

func decodePeer(id, v string) (Peer, error) {
	var p Peer
	if len(id) != len(p.ID) || (len(v) != 7 && len(v) != 19) {
		return p, fmt.Errorf("bad entry for peer %x: %d bytes", id, len(v))
	}
	copy(p.ID[:], id)
	p.Complete = v[0]&1 != 0
	p.Port = uint16(v[1])<<8 | uint16(v[2])
	p.IP, _ = netip.AddrFromSlice([]byte(v[3:]))
	return p, nil
}

// decodeReply reads {complete, incomplete, id, peer, ...}, the complete
// peers first, and shuffles each group: a script that took a whole group
// returns it in Redis's order, not a random one.
func decodeReply(res []any) ([]Peer, int, int, error) {
	if len(res) < 2 || len(res)%2 != 0 {
		return nil, 0, 0, fmt.Errorf("unexpected script reply of %d elements", len(res))
	}
	complete, ok1 := res[0].(int64)
	incomplete, ok2 := res[1].(int64)
	if !ok1 || !ok2 {
		return nil, 0, 0, fmt.Errorf("unexpected script reply counts %T, %T", res[0], res[1])
	}
	var peers []Peer
	if len(res) > 2 {
		peers = make([]Peer, 0, (len(res)-2)/2)
	}
	for i := 2; i < len(res); i += 2 {
		id, ok1 := res[i].(string)
		v, ok2 := res[i+1].(string)
		if !ok1 || !ok2 {
			return nil, 0, 0, fmt.Errorf("unexpected script reply types %T, %T", res[i], res[i+1])
		}
		p, err := decodePeer(id, v)
		if err != nil {
			return nil, 0, 0, err
		}
		peers = append(peers, p)
	}
	split := 0
	for split < len(peers) && peers[split].Complete {
		split++
	}
	shuffle(peers[:split])
	shuffle(peers[split:])
	return peers, int(complete), int(incomplete), nil
}

func shuffle(ps []Peer) {
	rand.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
}

// luaCommon is the prelude of every script. KEYS are {complete, incomplete,
// peers}. expire drops the members of a group whose score is at most now;
// sample appends up to n ids of a group with their encoded peers.
const luaCommon = `
local function expire(z, now)
  local dead = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  if #dead > 0 then
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
    for _, id in ipairs(dead) do redis.call('HDEL', KEYS[3], id) end
  end
end

local function sample(out, z, size, n)
  if n <= 0 or size == 0 then return n end
  local ids
  if size <= n then
    ids = redis.call('ZRANGE', z, 0, -1)
  else
    ids = redis.call('ZRANDMEMBER', z, n)
  end
  for _, id in ipairs(ids) do
    local v = redis.call('HGET', KEYS[3], id)
    if v then
      out[#out + 1] = id
      out[#out + 1] = v
      n = n - 1
    else
      redis.call('ZREM', z, id) -- a member without its entry: repair
    end
  end
  return n
end

local function answer(n)
  local c = redis.call('ZCARD', KEYS[1])
  local i = redis.call('ZCARD', KEYS[2])
  local out = {c, i}
  n = sample(out, KEYS[1], c, n)
  sample(out, KEYS[2], i, n)
  return out
end
`

// announceScript: ARGV = now, expiry, key TTL (ms), id, encoded peer,
// complete ("1" or "0"), n.
var announceScript = redis.NewScript(luaCommon + `
expire(KEYS[1], ARGV[1])
expire(KEYS[2], ARGV[1])
local group, other = KEYS[2], KEYS[1]
if ARGV[6] == '1' then group, other = KEYS[1], KEYS[2] end
redis.call('ZREM', other, ARGV[4])
redis.call('ZADD', group, ARGV[2], ARGV[4])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
for k = 1, 3 do redis.call('PEXPIRE', KEYS[k], ARGV[3]) end
return answer(tonumber(ARGV[7]))
`)

// peersScript: ARGV = now, n. With n = 0 it only counts.
var peersScript = redis.NewScript(luaCommon + `
expire(KEYS[1], ARGV[1])
expire(KEYS[2], ARGV[1])
return answer(tonumber(ARGV[2]))
`)

// removeScript: ARGV = id.
var removeScript = redis.NewScript(`
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 0
`)
