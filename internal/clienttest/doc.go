// Package clienttest drives real container clients through Shoal: the Docker
// engine (docker pull), containerd (ctr with a hosts.toml mirror, ?ns=; 1.6,
// and 2.x's transfer service fetching each layer as parallel ranged
// requests, timed against a CNCF distribution pull-through cache) and the
// docker-compose swarm of examples/compose. Each test skips, saying why,
// when its client or engine is missing; none passes without running.
package clienttest
