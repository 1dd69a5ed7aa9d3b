#!/usr/bin/env bash
# Benchmark of foreground first (docs/BENCHMARKS.md, section "Foreground
# first"): runs bench/foreground, which starts a private dockerd, a
# docker-registry on 127.0.0.1 behind internal/faultproxy (every request
# answered after -delay, 3 s by default) and the Nomad fake, then times a
# foreground pull alone, while the agent works through a backlog with
# yield = "cancel", "pause" and "off", all in this one run. Markdown on
# stdout, progress on stderr; it stops and removes everything it started.
#
# Run through bench/run.sh (what it needs, its bounds); flags are passed
# on (go run ./bench/foreground -h), e.g.
#   bench/foreground.sh -run alone,cancel -delay 1s
exec "$(dirname "$0")/run.sh" foreground "$@"
