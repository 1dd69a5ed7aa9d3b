#!/usr/bin/env bash
# Benchmark of the bundle (docs/BENCHMARKS.md, section "bundle"): builds the
# prefetch binary, then runs bench/bundle, which starts a private dockerd
# (internal/testbed), imports images whose layers are random bytes generated
# on the fly (1.2 GiB by default, never stored in the repository), times
# `prefetch bundle` against `docker save` and `prefetch once -bundle` against
# `docker load` of the same images in the same run, records prefetch's peak
# RSS on that bundle and on a small one, prints Markdown on stdout, and
# stops and removes everything it started. Progress goes to stderr.
#
# Needs root (dockerd does), Go 1.26 and Debian's docker.io. Flags are passed
# on to bench/bundle (go run ./bench/bundle -h), e.g.
#   bench/bundle.sh -size 1024 -reps 5
# Bounded: the program stops itself after -timeout (9m by default), and is
# interrupted at 10m; either way it stops its dockerd.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "bench/bundle.sh: needs root (dockerd does)" >&2
  exit 1
fi
for bin in dockerd containerd docker; do
  command -v "$bin" >/dev/null || { echo "bench/bundle.sh: $bin not found (apt-get install docker.io)" >&2; exit 1; }
done

BIN=$(mktemp -d /tmp/pfbench.XXXX)
trap 'rm -rf "$BIN"' EXIT
go build -o "$BIN/prefetch" ./cmd/prefetch
go build -o "$BIN/bundle-bench" ./bench/bundle

timeout -s INT -k 60s 600s "$BIN/bundle-bench" -prefetch "$BIN/prefetch" "$@" &
tpid=$!
trap 'kill -INT "$tpid" 2>/dev/null || true' INT TERM
rc=0
wait "$tpid" || rc=$?
while kill -0 "$tpid" 2>/dev/null; do wait "$tpid" || rc=$?; done
exit "$rc"
