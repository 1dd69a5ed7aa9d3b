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
# Run through bench/run.sh (what it needs, its bounds); flags are passed
# on (go run ./bench/peers -h), e.g.
#   bench/peers.sh -bandwidth 25000000 -reps 2
exec "$(dirname "$0")/run.sh" peers "$@"
