#!/usr/bin/env bash
# Runs every check and every test: gofmt, go vet, staticcheck, then go test
# -race. The tests start their own real servers (a private dockerd on its own
# socket and data-root, docker-registry instances on 127.0.0.1) and stop them
# afterwards, so this needs root, the Debian packages and the Go tools that
# `scripts/deps.sh test` installs. Under CI=true a test that needs them fails
# rather than skips when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh test
gofmt_out=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$gofmt_out" ]; then
  echo "test: not gofmt-ed:" >&2
  echo "$gofmt_out" >&2
  exit 1
fi
go vet ./...
"$(go env GOPATH)/bin/staticcheck" ./...
go test -race -count=1 -timeout 20m "$@" ./...
