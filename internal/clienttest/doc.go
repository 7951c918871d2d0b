// Package clienttest drives real container clients through Shoal: the Docker
// engine (docker pull), containerd (ctr with a hosts.toml mirror, ?ns=) and
// the docker-compose swarm of examples/compose. Each test skips, saying why,
// when its client or engine is missing; none passes without running.
package clienttest
