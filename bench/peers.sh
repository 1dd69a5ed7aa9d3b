#!/usr/bin/env bash
# Benchmark of peers as a source (docs/BENCHMARKS.md, section "Peers"): runs
# bench/peers, which starts -nodes private dockerds (4 by default), one
# agent on each, the Nomad fake (its service catalog lists the agents) and a
# docker-registry on 127.0.0.1 behind internal/faultproxy (counting the
# bytes it serves; -bandwidth shares one link between every pull), then
# rolls one new image out to every node at once without peers and with
# peers { order = "first" }, in this one run. Markdown on stdout, progress
# on stderr; it stops and removes everything it started.
#
# Needs root (dockerd does), Go 1.26, Debian's docker.io and docker-registry.
# Flags are passed on (go run ./bench/peers -h), e.g.
#   bench/peers.sh -bandwidth 25000000 -reps 2
# Bounded: the program stops itself after -timeout (9m by default), and is
# interrupted at 10m; either way it stops its dockerds and registry.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "bench/peers.sh: needs root (dockerd does)" >&2
  exit 1
fi
for bin in dockerd containerd docker-registry; do
  command -v "$bin" >/dev/null || { echo "bench/peers.sh: $bin not found (apt-get install docker.io docker-registry)" >&2; exit 1; }
done

BIN=$(mktemp -d /tmp/peersbench.XXXX)
trap 'rm -rf "$BIN"' EXIT
go build -o "$BIN/peers-bench" ./bench/peers
timeout -s INT -k 60s 600s "$BIN/peers-bench" "$@" &
tpid=$!
trap 'kill -INT "$tpid" 2>/dev/null || true' INT TERM
rc=0
wait "$tpid" || rc=$?
while kill -0 "$tpid" 2>/dev/null; do wait "$tpid" || rc=$?; done
exit "$rc"
