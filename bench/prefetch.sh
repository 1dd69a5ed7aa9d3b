#!/usr/bin/env bash
# Benchmarks of prefetch (docs/BENCHMARKS.md, section "prefetch"): builds the
# prefetch binary, then runs bench/prefetch, which starts a private dockerd
# and a docker-registry on 127.0.0.1 (internal/testbed), measures, prints
# Markdown on stdout, and stops and removes everything it started. Progress
# goes to stderr.
#
# Needs root (dockerd does), Go 1.26, Debian's docker.io and docker-registry.
# Flags are passed on to bench/prefetch (go run ./bench/prefetch -h), e.g.
#   bench/prefetch.sh -run warm -warm-images 200
# Bounded: the program stops itself after -timeout (9m by default), and is
# interrupted at 10m; either way it stops its dockerd and registries.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "bench/prefetch.sh: needs root (dockerd does)" >&2
  exit 1
fi
for bin in dockerd containerd docker-registry docker; do
  command -v "$bin" >/dev/null || { echo "bench/prefetch.sh: $bin not found (apt-get install docker.io docker-registry)" >&2; exit 1; }
done

BIN=$(mktemp -d /tmp/pfbench.XXXX)
trap 'rm -rf "$BIN"' EXIT
go build -o "$BIN/prefetch" ./cmd/prefetch

# `go run` ignores SIGINT and waits for the program, which stops on SIGINT
# and cleans up; timeout sends SIGINT to its whole process group (go run and
# the program), and this script forwards its own INT/TERM there.
timeout -s INT -k 60s 600s go run ./bench/prefetch -prefetch "$BIN/prefetch" "$@" &
tpid=$!
trap 'kill -INT -- -"$tpid" 2>/dev/null || true' INT TERM
rc=0
wait "$tpid" || rc=$?
while kill -0 "$tpid" 2>/dev/null; do wait "$tpid" || rc=$?; done
exit "$rc"
