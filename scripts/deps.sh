#!/usr/bin/env bash
# Installs what the tests and the try-out need, when missing: from Debian,
# docker.io (dockerd 20.10, containerd, the docker CLI) and docker-registry
# (the CNCF distribution registry), which need root and apt-get; and the real
# consul-template, with go install into $(go env GOPATH)/bin. Go itself
# (1.26) must already be on PATH.
set -euo pipefail

ct_bin="$(go env GOPATH)/bin/consul-template"
if ! command -v consul-template >/dev/null 2>&1 && [ ! -x "$ct_bin" ]; then
  echo "deps: installing consul-template v0.42.1 into $ct_bin" >&2
  GOFLAGS=-buildvcs=false go install github.com/hashicorp/consul-template@v0.42.1
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "deps: missing Debian packages: ${missing[*]}; install them as root: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
