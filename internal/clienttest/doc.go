// Package clienttest drives real clients through Shoal: the Docker engine
// (docker pull), containerd (ctr with a hosts.toml mirror, ?ns=), the
// docker-compose swarm of examples/compose, and ordinary BitTorrent clients
// (aria2c, a plain anacrolix/torrent client) on the standard torrents the
// tracker hands out. Each test skips, saying why, when its client or engine
// is missing; none passes without running.
package clienttest
