// Package clienttest drives real clients through Shoal: the Docker engine
// (docker pull), containerd (ctr with a hosts.toml mirror, ?ns=; 1.6, and
// 2.x's transfer service fetching each layer as parallel ranged requests,
// timed against a CNCF distribution pull-through cache), the docker-compose
// swarm of examples/compose, and ordinary BitTorrent clients (aria2c, a
// plain anacrolix/torrent client) on the standard torrents the tracker hands
// out. Each test skips, saying why, when its client or engine is missing;
// none passes without running.
package clienttest
