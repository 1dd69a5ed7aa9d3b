#!/usr/bin/env bash
# Benchmarks of prefetch (docs/BENCHMARKS.md, section "prefetch"): builds the
# prefetch binary, then runs bench/prefetch, which starts a private dockerd
# and a docker-registry on 127.0.0.1 (internal/testbed), measures, prints
# Markdown on stdout, and stops and removes everything it started. Progress
# goes to stderr.
#
# Run through bench/run.sh (what it needs, its bounds); flags are passed
# on (go run ./bench/prefetch -h), e.g.
#   bench/prefetch.sh -run warm -warm-images 200
exec "$(dirname "$0")/run.sh" prefetch "$@"
