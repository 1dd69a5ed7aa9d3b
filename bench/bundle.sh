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
# Run through bench/run.sh (what it needs, its bounds); flags are passed
# on (go run ./bench/bundle -h), e.g.
#   bench/bundle.sh -size 1024 -reps 5
exec "$(dirname "$0")/run.sh" bundle "$@"
