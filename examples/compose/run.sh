#!/usr/bin/env bash
# Brings up the compose swarm (docker-compose.yml), loads a sample image into
# its upstream registry, pulls it by tag through every agent at once (from the
# host, via each agent's published port), verifies the manifest and every
# blob digest, prints where each agent's bytes came from, and tears down.
#
#   examples/compose/run.sh            up, load, pull, verify, report, down
#   examples/compose/run.sh --keep     ... and leave the swarm running
#   examples/compose/run.sh --down     only tear a kept swarm down
#   TLS=1 examples/compose/run.sh      the same with mutual TLS between every
#                                      component (docker-compose.tls.yml); the
#                                      certificates are made in a temporary
#                                      directory (or SHOAL_TLS_DIR), and a
#                                      client without one must be refused
#
# Needs: docker with docker-compose (v1) or the compose plugin, the images
# shoal:dev and shoal-registry:dev (`make images`), Go (builds imagetool),
# curl. Environment: LAYERS (3), LAYER_SIZE (16MiB), PROJECT (shoal-compose),
# and the SHOAL_*_PORT variables of docker-compose.yml.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$here"

PROJECT=${PROJECT:-shoal-compose}
LAYERS=${LAYERS:-3}
LAYER_SIZE=${LAYER_SIZE:-16MiB}
REPO=${REPO:-shoal/demo}
TAG=${TAG:-latest}
REGISTRY_PORT=${SHOAL_REGISTRY_PORT:-7690}
AGENT_PORTS=("${SHOAL_AGENT1_PORT:-7651}" "${SHOAL_AGENT2_PORT:-7652}" "${SHOAL_AGENT3_PORT:-7653}")
ADMIN_PORTS=("${SHOAL_AGENT1_ADMIN_PORT:-7661}" "${SHOAL_AGENT2_ADMIN_PORT:-7662}" "${SHOAL_AGENT3_ADMIN_PORT:-7663}")

keep=false
case "${1:-}" in
--keep) keep=true ;;
--down | "") ;;
*) echo "usage: $0 [--keep|--down]" >&2; exit 2 ;;
esac

TLS=${TLS:-0}
files=(-f "$here/docker-compose.yml")
scheme=http
curlc=(curl -fsS)
pullflags=()
tlsdir_made=false
if [ "$TLS" = 1 ]; then
	files+=(-f "$here/docker-compose.tls.yml")
	if [ -z "${SHOAL_TLS_DIR:-}" ]; then
		SHOAL_TLS_DIR=$(mktemp -d)
		tlsdir_made=true
	fi
	export SHOAL_TLS_DIR
	scheme=https
	curlc=(curl -fsS --cacert "$SHOAL_TLS_DIR/ca.crt" --cert "$SHOAL_TLS_DIR/tls.crt" --key "$SHOAL_TLS_DIR/tls.key")
	pullflags=(--cacert "$SHOAL_TLS_DIR/ca.crt" --cert "$SHOAL_TLS_DIR/tls.crt" --key "$SHOAL_TLS_DIR/tls.key")
fi

if docker compose version >/dev/null 2>&1; then
	compose() { docker compose -p "$PROJECT" "${files[@]}" "$@"; }
elif command -v docker-compose >/dev/null 2>&1; then
	compose() { docker-compose -p "$PROJECT" "${files[@]}" "$@"; }
else
	echo "run.sh: neither 'docker compose' nor 'docker-compose' is installed" >&2
	exit 1
fi
down() { compose down -v --remove-orphans >/dev/null 2>&1 || true; }

if [ "${1:-}" = "--down" ]; then
	down
	if $tlsdir_made; then rm -rf "$SHOAL_TLS_DIR"; fi
	echo "swarm $PROJECT removed"
	exit 0
fi

for img in "${SHOAL_IMAGE:-shoal:dev}" "${SHOAL_REGISTRY_IMAGE:-shoal-registry:dev}"; do
	docker image inspect "$img" >/dev/null 2>&1 || { echo "run.sh: image $img missing: run 'make images'" >&2; exit 1; }
done

tool="$root/bin/imagetool"
TLS_NAMES=tracker,origin1,origin2,buildindex,agent1,agent2,agent3,localhost,127.0.0.1
(cd "$root" && GOFLAGS="${GOFLAGS:-} -tags=nosqlite,disable_libutp" CGO_ENABLED=0 go build -o "$tool" ./examples/compose/imagetool)
if [ "$TLS" = 1 ] && [ ! -e "$SHOAL_TLS_DIR/tls.crt" ]; then
	# One certificate for every service name, and 127.0.0.1 for the host's
	# clients; readable by the containers' non-root user.
	chmod 755 "$SHOAL_TLS_DIR"
	"$tool" certs --dir "$SHOAL_TLS_DIR" --names "$TLS_NAMES"
fi

status=0
on_exit() {
	if [ $status -ne 0 ]; then
		echo "--- logs of the failed run (last 30 lines per service)" >&2
		compose logs --no-color --tail 30 >&2 || true
	fi
	if $keep; then
		echo "swarm left running: pull from $scheme://127.0.0.1:${AGENT_PORTS[0]}/$REPO:$TAG; stop with: $0 --down"
		[ "$TLS" = 1 ] && echo "certificates in $SHOAL_TLS_DIR (stop with: TLS=1 SHOAL_TLS_DIR=$SHOAL_TLS_DIR $0 --down)"
	else
		down
		if $tlsdir_made; then rm -rf "$SHOAL_TLS_DIR"; fi
	fi
}
trap 'status=$?; on_exit' EXIT

down # a clean start: no cache from an earlier run
compose up -d --no-build

# Wait for every agent's readiness on its published admin port.
wait_ready() {
	local url=$1 deadline=$((SECONDS + 60))
	until "${curlc[@]}" "$url" >/dev/null 2>&1; do
		if [ $SECONDS -ge $deadline ]; then
			echo "run.sh: $url not ready after 60s" >&2
			return 1
		fi
		sleep 0.5
	done
}
for p in "${ADMIN_PORTS[@]}"; do wait_ready "$scheme://127.0.0.1:$p/readiness"; done
wait_ready "http://127.0.0.1:$REGISTRY_PORT/v2/"
echo "swarm up: registry, tracker, origin1, origin2, buildindex, agent1-3"

"$tool" push --registry "127.0.0.1:$REGISTRY_PORT" --repo "$REPO" --tag "$TAG" --layers "$LAYERS" --layer-size "$LAYER_SIZE"

# Every agent pulls the image by tag at the same moment.
pids=()
logs=()
t0=$(date +%s%N)
for i in "${!AGENT_PORTS[@]}"; do
	log=$(mktemp)
	logs+=("$log")
	"$tool" pull --ref "127.0.0.1:${AGENT_PORTS[$i]}/$REPO:$TAG" --layers "$LAYERS" --layer-size "$LAYER_SIZE" ${pullflags[@]+"${pullflags[@]}"} >"$log" 2>&1 &
	pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do
	if wait "${pids[$i]}"; then
		echo "agent$((i + 1)): $(cat "${logs[$i]}")"
	else
		echo "agent$((i + 1)): FAILED: $(cat "${logs[$i]}")"
		failed=$((failed + 1))
	fi
	rm -f "${logs[$i]}"
done
ms=$((($(date +%s%N) - t0) / 1000000))
printf 'all pulls done in %d.%03ds\n' $((ms / 1000)) $((ms % 1000))

# Where the bytes came from, per agent.
metric() { # metric URL NAME LABELS -> value (0 if absent)
	"${curlc[@]}" "$1" | awk -v m="$2$3" '$1 == m { printf "%d", $2; found=1 } END { if (!found) printf "0" }'
}
printf '\n%-8s %14s %14s %14s\n' agent from_origins from_peers served
tot_o=0 tot_p=0
for i in "${!ADMIN_PORTS[@]}"; do
	u="$scheme://127.0.0.1:${ADMIN_PORTS[$i]}/metrics"
	o=$(metric "$u" shoal_p2p_received_bytes_total '{source="origin"}')
	p=$(metric "$u" shoal_p2p_received_bytes_total '{source="peer"}')
	s=$(metric "$u" shoal_agent_served_bytes_total '')
	printf '%-8s %14d %14d %14d\n' "agent$((i + 1))" "$o" "$p" "$s"
	tot_o=$((tot_o + o)) tot_p=$((tot_p + p))
done
printf '%-8s %14d %14d\n' total "$tot_o" "$tot_p"

if [ $failed -ne 0 ]; then
	echo "FAILED: $failed of ${#AGENT_PORTS[@]} pulls did not verify" >&2
	exit 1
fi

# With TLS, every published server (the agents' registry API and admin
# port) refuses a client without a certificate, and one whose certificate
# another CA signed; the in-process tests cover every role.
if [ "$TLS" = 1 ]; then
	refused=0 ports=("${AGENT_PORTS[@]}" "${ADMIN_PORTS[@]}")
	for p in "${ports[@]}"; do
		u="https://127.0.0.1:$p/v2/"
		if curl -fsS --cacert "$SHOAL_TLS_DIR/ca.crt" "$u" >/dev/null 2>&1; then
			echo "FAILED: $u served a client without a certificate" >&2
			exit 1
		fi
		if curl -fsS --cacert "$SHOAL_TLS_DIR/ca.crt" --cert "$SHOAL_TLS_DIR/intruder.crt" --key "$SHOAL_TLS_DIR/intruder.key" "$u" >/dev/null 2>&1; then
			echo "FAILED: $u served a client whose certificate another CA signed" >&2
			exit 1
		fi
		refused=$((refused + 1))
	done
	echo "TLS: ${refused} of ${#ports[@]} servers refused clients without a certificate or with another CA's"

	# Rotation, as cert-manager does it: a new certificate from the same CA
	# written over the mounted files. Every published server presents it
	# within its reload interval (2s here), with no restart, and a new
	# image still pulls and verifies through every agent (agents, origins,
	# tracker and build-index then talk with the new certificates).
	"$tool" certs --dir "$SHOAL_TLS_DIR" --names "$TLS_NAMES" --rotate >/dev/null
	want=$("$tool" serial --file "$SHOAL_TLS_DIR/tls.crt")
	rotated=0
	for p in "${ports[@]}"; do
		deadline=$((SECONDS + 30))
		until [ "$("$tool" serial --addr "127.0.0.1:$p" ${pullflags[@]+"${pullflags[@]}"} 2>/dev/null)" = "$want" ]; do
			if [ $SECONDS -ge $deadline ]; then
				echo "FAILED: 127.0.0.1:$p still presents the old certificate 30s after the rotation" >&2
				exit 1
			fi
			sleep 0.5
		done
		rotated=$((rotated + 1))
	done
	"$tool" push --registry "127.0.0.1:$REGISTRY_PORT" --repo "$REPO" --tag rotated --layers 2 --layer-size 4MiB --seed 7 >/dev/null
	for p in "${AGENT_PORTS[@]}"; do
		if ! out=$("$tool" pull --ref "127.0.0.1:$p/$REPO:rotated" --layers 2 --layer-size 4MiB --seed 7 "${pullflags[@]}" 2>&1); then
			echo "FAILED: pull through 127.0.0.1:$p after the rotation: $out" >&2
			exit 1
		fi
	done
	echo "TLS: rotated certificate served by ${rotated} of ${#ports[@]} servers without a restart; a new image verified through every agent"
fi

# The host's Docker engine pulls the same image through agent 1 (plain HTTP
# to 127.0.0.0/8 is allowed by default) and must store the same manifest.
# Not with TLS: the agent's registry API then wants a client certificate.
if [ "${DOCKER_PULL:-1}" = 1 ] && [ "$TLS" != 1 ]; then
	ref="127.0.0.1:${AGENT_PORTS[0]}/$REPO:$TAG"
	docker rmi -f "$ref" >/dev/null 2>&1 || true
	docker pull -q "$ref" >/dev/null
	want=$(grep -o 'sha256:[0-9a-f]*' <<<"$("$tool" pull --ref "$ref" --layers "$LAYERS" --layer-size "$LAYER_SIZE")" | head -1)
	got=$(docker image inspect --format '{{join .RepoDigests " "}}' "$ref")
	docker rmi -f "$ref" >/dev/null 2>&1 || true
	if [[ " $got " != *"@$want "* ]]; then
		echo "FAILED: docker pull $ref stored $got, want digest $want" >&2
		exit 1
	fi
	echo "docker pull $ref: manifest $want"
fi
echo "OK: ${#AGENT_PORTS[@]} of ${#AGENT_PORTS[@]} pulls verified"
