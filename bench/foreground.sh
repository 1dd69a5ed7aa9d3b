#!/usr/bin/env bash
# Benchmark of foreground first (docs/BENCHMARKS.md, section "Foreground
# first"): runs bench/foreground, which starts a private dockerd, a
# docker-registry on 127.0.0.1 behind internal/faultproxy (every request
# answered after -delay, 3 s by default) and the Nomad fake, then times a
# foreground pull alone, while the agent works through a backlog with
# yield = "cancel", "pause" and "off", all in this one run. Markdown on
# stdout, progress on stderr; it stops and removes everything it started.
#
# Needs root (dockerd does), Go 1.26, Debian's docker.io and docker-registry.
# Flags are passed on (go run ./bench/foreground -h), e.g.
#   bench/foreground.sh -run alone,cancel -delay 1s
# Bounded: the program stops itself after -timeout (9m by default), and is
# interrupted at 10m; either way it stops its dockerd and registry.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "bench/foreground.sh: needs root (dockerd does)" >&2
  exit 1
fi
for bin in dockerd containerd docker-registry; do
  command -v "$bin" >/dev/null || { echo "bench/foreground.sh: $bin not found (apt-get install docker.io docker-registry)" >&2; exit 1; }
done

BIN=$(mktemp -d /tmp/fgbench.XXXX)
trap 'rm -rf "$BIN"' EXIT
go build -o "$BIN/foreground-bench" ./bench/foreground
timeout -s INT -k 60s 600s "$BIN/foreground-bench" "$@" &
tpid=$!
trap 'kill -INT "$tpid" 2>/dev/null || true' INT TERM
rc=0
wait "$tpid" || rc=$?
while kill -0 "$tpid" 2>/dev/null; do wait "$tpid" || rc=$?; done
exit "$rc"
