#!/usr/bin/env bash
# Installs, when missing, what the try-out or the tests need:
#
#   deps.sh try    Debian's docker.io (dockerd 20.10, containerd, the docker
#                  CLI) and docker-registry (the CNCF distribution registry),
#                  which need root and apt-get: all that scripts/try.sh uses.
#   deps.sh test   the same, Debian's prometheus (for promtool, which tests
#                  the alerting rules in deploy/; the package's server is not
#                  needed), and, with go install into $(go env GOPATH)/bin at
#                  pinned versions, the real consul-template (the tests render
#                  configs with it), staticcheck and govulncheck
#                  (scripts/test.sh runs them).
#
# Go itself (1.26) must already be on PATH.
set -euo pipefail

case "${1:-}" in
try) want_go_tools=false ;;
test) want_go_tools=true ;;
*)
  echo "usage: deps.sh try|test" >&2
  exit 2
  ;;
esac

if $want_go_tools; then
  gobin="$(go env GOPATH)/bin"
  if ! command -v consul-template >/dev/null 2>&1 && [ ! -x "$gobin/consul-template" ]; then
    echo "deps: installing consul-template v0.42.1 into $gobin" >&2
    GOBIN="$gobin" GOFLAGS=-buildvcs=false go install github.com/hashicorp/consul-template@v0.42.1
  fi
  # 0.8.x (staticcheck 2026.2) is the first to know Go 1.26; test.sh runs
  # this very binary, so another staticcheck on PATH does not matter.
  if ! "$gobin/staticcheck" -version 2>/dev/null | grep -qF '(0.8.2)'; then
    echo "deps: installing staticcheck v0.8.2 into $gobin" >&2
    GOBIN="$gobin" GOFLAGS=-buildvcs=false go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
  fi
  if ! "$gobin/govulncheck" -version 2>/dev/null | grep -qF 'v1.9.0'; then
    echo "deps: installing govulncheck v1.9.0 into $gobin" >&2
    GOBIN="$gobin" GOFLAGS=-buildvcs=false go install golang.org/x/vuln/cmd/govulncheck@v1.9.0
  fi
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
if $want_go_tools; then
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "deps: missing Debian packages: ${missing[*]}; install them as root: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
