#!/usr/bin/env bash
# The try-out: builds prefetch, starts a private dockerd and a local "upstream"
# registry on 127.0.0.1, and bootstraps a node with `prefetch once` while the
# in-cluster registry is not up yet; then brings that registry up and runs
# again; then runs the `prefetch run` agent, removes an image under it the way
# Nomad's image GC does, and watches it come back. Everything it starts lives in one temp directory and is stopped and
# removed on exit; no system dockerd, socket or registry is touched.
#
# Needs root (dockerd does), Go 1.26, and the Debian packages docker.io and
# docker-registry (installed if missing).
#
# Environment:
#   PREFETCH_TRY_UPSTREAM  the upstream registry's address (127.0.0.1:15000)
#   PREFETCH_TRY_CLUSTER   the in-cluster registry's address (127.0.0.1:15001)
#   PREFETCH_TRY_LISTEN    the agent's status address (127.0.0.1:19105)
#   PREFETCH_TRY_KEEP=1    leave the directory (logs, config) behind
set -euo pipefail
cd "$(dirname "$0")/.."

UP=${PREFETCH_TRY_UPSTREAM:-127.0.0.1:15000}
CLUSTER=${PREFETCH_TRY_CLUSTER:-127.0.0.1:15001}

step() { printf '\n==> %s\n' "$*"; }

bash scripts/deps.sh try
step "building bin/prefetch"
mkdir -p bin
go build -o bin/prefetch ./cmd/prefetch
PREFETCH=$PWD/bin/prefetch

for addr in "$UP" "$CLUSTER"; do
  if (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null; then
    echo "try: something already listens on $addr; set PREFETCH_TRY_UPSTREAM / PREFETCH_TRY_CLUSTER" >&2
    exit 1
  fi
done

DIR=$(mktemp -d /tmp/pftry.XXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${PREFETCH_TRY_KEEP:-}" = 1 ]; then echo "try: left $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

step "starting a private dockerd on $DIR/docker.sock"
echo '{}' >"$DIR/daemon.json"
dockerd --config-file "$DIR/daemon.json" -H "unix://$DIR/docker.sock" \
  --data-root "$DIR/root" --exec-root "$DIR/exec" --pidfile "$DIR/docker.pid" \
  --storage-driver=vfs --iptables=false --bridge=none --log-level=warn \
  >"$DIR/dockerd.log" 2>&1 &
pids+=($!)
export DOCKER_HOST="unix://$DIR/docker.sock"
for _ in $(seq 1 300); do docker version >/dev/null 2>&1 && break; sleep 0.2; done
docker version --format 'dockerd {{.Server.Version}}, API {{.Server.APIVersion}}'

start_registry() { # name addr
  mkdir -p "$DIR/$1"
  cat >"$DIR/$1/config.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $DIR/$1/data}}
http: {addr: $2}
YML
  docker-registry serve "$DIR/$1/config.yml" >"$DIR/$1/registry.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/${2%:*}/${2#*:}") 2>/dev/null && return 0; sleep 0.1; done
  echo "try: registry $1 did not start; see $DIR/$1/registry.log" >&2
  return 1
}

push_demo() { # ref content
  local d
  d=$(mktemp -d "$DIR/img.XXXX")
  echo "$2" >"$d/version"
  tar -C "$d" -cf "$d.tar" version
  docker import "$d.tar" "$1" >/dev/null
  docker push "$1" >/dev/null
  docker rmi -f "$1" >/dev/null
}

step "starting the upstream registry on $UP and pushing two demo images to it"
start_registry upstream "$UP"
push_demo "$UP/demo/traefik:v3.1.2" "traefik v3.1.2 from upstream"
push_demo "$UP/demo/registry:2.8.3" "registry 2.8.3 from upstream"

cat >"$DIR/config.hcl" <<HCL
# The in-cluster registry ($CLUSTER) is not running yet: it is itself a Nomad
# job whose image must come from somewhere. The upstream registry ($UP) is.
docker {
  host = "unix://$DIR/docker.sock"
}
concurrency = 2

image "traefik" {
  expected = "$CLUSTER/demo/traefik:v3.1.2"
  sources  = ["$UP/demo/traefik:v3.1.2"]
}

image "registry" {
  expected = "$CLUSTER/demo/registry:2.8.3"
  sources  = ["$UP/demo/registry:2.8.3"]
}
HCL
step "the config ($DIR/config.hcl)"
cat "$DIR/config.hcl"

step "prefetch validate"
"$PREFETCH" validate -config "$DIR/config.hcl"

step "prefetch once: bootstrap, with the in-cluster registry down"
"$PREFETCH" once -config "$DIR/config.hcl" -log-format text

step "what Nomad's docker driver will find locally"
docker images --format '{{.Repository}}:{{.Tag}}  {{.ID}}' | sort

step "prefetch once again: a converged node pulls no layer"
"$PREFETCH" once -config "$DIR/config.hcl" -log-format text

step "the in-cluster registry comes up, with a newer traefik under the same tag"
start_registry cluster "$CLUSTER"
push_demo "$CLUSTER/demo/traefik:v3.1.2" "traefik v3.1.2, rebuilt in the cluster"
"$PREFETCH" once -config "$DIR/config.hcl" -log-format text

step "prefetch run: the node agent keeps them present"
LISTEN=${PREFETCH_TRY_LISTEN:-127.0.0.1:19105}
"$PREFETCH" run -config "$DIR/config.hcl" -listen "$LISTEN" -lock-file "$DIR/prefetch.lock" \
  -log-format text >"$DIR/agent.log" 2>&1 &
agent=$!
pids+=("$agent")
# Both images present: an agent that has not applied its config yet lists
# no image, which status takes for "nothing missing".
converged() { [ "$("$PREFETCH" status -addr "$LISTEN" 2>/dev/null | grep -c ' present ')" -eq 2 ]; }
for _ in $(seq 1 150); do converged && break; sleep 0.2; done
"$PREFETCH" status -addr "$LISTEN"

step "Nomad's image GC removes traefik by image ID (docker rmi): the agent restores it from the event"
docker rmi -f "$(docker image inspect --format '{{.Id}}' "$CLUSTER/demo/traefik:v3.1.2")" >/dev/null
restored='image restored after Docker removed it'
for _ in $(seq 1 150); do grep -q "$restored" "$DIR/agent.log" && break; sleep 0.2; done
docker images --format '{{.Repository}}:{{.Tag}}  {{.ID}}' | grep "$CLUSTER" | sort
if ! grep "$restored" "$DIR/agent.log"; then
  echo "try: the agent did not restore traefik within 30s; its log:" >&2
  cat "$DIR/agent.log" >&2
  exit 1
fi

step "stopping the agent (SIGTERM)"
kill -TERM "$agent"
wait "$agent" && echo "prefetch run exited 0"

step "done: try your own config with"
echo "  DOCKER_HOST=unix:///var/run/docker.sock $PREFETCH once -config /path/to/config.hcl"
