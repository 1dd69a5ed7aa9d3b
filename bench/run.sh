#!/usr/bin/env bash
# bench/run.sh NAME [FLAG...]: builds and runs the benchmark program
# bench/NAME (bundle, foreground, peers or prefetch; each NAME.sh beside this
# script says what it measures), passing the flags on (`go run ./bench/NAME
# -h` lists them). Programs that measure the prefetch binary (bundle,
# prefetch) are given one built from this tree as -prefetch.
#
# Needs root (dockerd does), Go 1.26, and Debian's docker.io and
# docker-registry (scripts/deps.sh test installs them). Bounded: the program
# stops itself after its -timeout (9m by default) and is interrupted at 10m;
# either way it stops the dockerds and registries it started. Markdown on
# stdout, progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

name=${1:?usage: bench/run.sh NAME [FLAG...] (NAME: bundle, foreground, peers, prefetch)}
shift
case "$name" in
  bundle | prefetch) wants_prefetch=1 ;;
  foreground | peers) wants_prefetch= ;;
  *) echo "bench/run.sh: no benchmark $name (bundle, foreground, peers, prefetch)" >&2; exit 2 ;;
esac
if [ "$(id -u)" != 0 ]; then
  echo "bench/$name: needs root (dockerd does)" >&2
  exit 1
fi
for bin in dockerd containerd docker docker-registry; do
  command -v "$bin" >/dev/null || { echo "bench/$name: $bin not found (bash scripts/deps.sh test, or apt-get install docker.io docker-registry)" >&2; exit 1; }
done

BIN=$(mktemp -d "/tmp/bench-$name.XXXX")
trap 'rm -rf "$BIN"' EXIT
args=()
if [ -n "$wants_prefetch" ]; then
  go build -o "$BIN/prefetch" ./cmd/prefetch
  args=(-prefetch "$BIN/prefetch")
fi
go build -o "$BIN/$name-bench" "./bench/$name"
# The program stops on SIGINT and cleans up; timeout sends it SIGINT at
# 10m, and this script forwards its own INT/TERM.
timeout -s INT -k 60s 600s "$BIN/$name-bench" "${args[@]}" "$@" &
tpid=$!
trap 'kill -INT "$tpid" 2>/dev/null || true' INT TERM
rc=0
wait "$tpid" || rc=$?
while kill -0 "$tpid" 2>/dev/null; do wait "$tpid" || rc=$?; done
exit "$rc"
