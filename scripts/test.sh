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
# govulncheck needs its database (vuln.go.dev): a known vulnerability in
# code the binaries reach fails the run (exit 3); a database that can't be
# reached (a machine with only the module proxy) skips the check, saying so.
set +e
vuln_out=$(timeout 300 "$(go env GOPATH)/bin/govulncheck" ./... 2>&1)
vuln_rc=$?
set -e
case $vuln_rc in
0) echo "govulncheck: no known vulnerability reached" ;;
3)
  echo "$vuln_out" >&2
  echo "test: govulncheck found known vulnerabilities (above)" >&2
  exit 1
  ;;
*) echo "govulncheck: skipped, its database could not be reached or read (exit $vuln_rc): $(printf '%s' "$vuln_out" | tail -n 1 | cut -c1-200)" >&2 ;;
esac
go test -race -count=1 -timeout 20m "$@" ./...
