# bench/nomad-lib.sh: what the benchmarks against a real Nomad share
# (bench/peers-nomad.sh, bench/stage-nomad.sh), sourced by them, never run:
# the clock, a bounded wait, a private dockerd, a registry's config, the
# task program images use, and a Nomad agent's config. Everything it starts
# is on 127.0.0.1 and under the caller's work directory $W; the caller
# keeps the PIDs (the array pids) and stops them.

# now: the time in seconds; since T: seconds from T to now, to hundredths.
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# wait_until WHAT SECONDS COMMAND...: runs COMMAND every $POLL seconds (0.25
# by default) until it succeeds, for SECONDS at most; says what it waited
# for when it gives up, and fails.
wait_until() {
	local what=$1 secs=$2 poll=${POLL:-0.25}
	shift 2
	local tries
	tries=$(awk -v s="$secs" -v p="$poll" 'BEGIN { printf "%d", s / p }')
	for _ in $(seq 1 "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep "$poll"; done
	echo "$(basename "$0" .sh): $what not within ${secs}s" >&2
	return 1
}

# start_dockerd DIR: a private dockerd with its socket, data-root and log
# in DIR (vfs, no bridge, no iptables), its PID added to pids; returns once
# it answers.
start_dockerd() {
	local dir=$1
	mkdir -p "$dir"
	echo '{}' >"$dir/daemon.json"
	dockerd --config-file "$dir/daemon.json" -H "unix://$dir/docker.sock" --data-root "$dir/docker" \
		--exec-root "$dir/exec" --pidfile "$dir/docker.pid" --storage-driver=vfs --iptables=false \
		--ip6tables=false --bridge=none --log-level=warn >"$dir/dockerd.log" 2>&1 &
	pids+=($!)
	wait_until "the dockerd of $dir" 60 env DOCKER_HOST="unix://$dir/docker.sock" docker version
}

# registry_config DIR ADDR ACCESSLOG: writes DIR/config.yml for a
# docker-registry serving DIR/data on ADDR, with its access log (one line a
# request, which counts pulls) when ACCESSLOG is true.
registry_config() {
	local dir=$1 addr=$2 disabled=true
	[ "$3" = true ] && disabled=false
	mkdir -p "$dir"
	cat >"$dir/config.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: $disabled}}
storage: {filesystem: {rootdirectory: $dir/data}}
http: {addr: $addr}
YML
}

# wait_program DIR: builds into DIR/wait a static program that waits for
# SIGTERM (a task's whole job), for an image's root file system.
wait_program() {
	local src
	src=$(mktemp -d "$W/wait-src.XXXX")
	cat >"$src/main.go" <<'GO'
package main

import (
	"os"
	"os/signal"
	"syscall"
)

// Waits for SIGTERM: the task's whole job.
func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
GO
	mkdir -p "$1"
	(cd "$src" && CGO_ENABLED=0 GO111MODULE=off go build -o "$1/wait" main.go)
}

# nomad_agent_hcl NAME HTTP DIR SERVER ACL SERVERS [CLIENT...]: a Nomad
# agent's config on 127.0.0.1: its data in DIR/nomad, its HTTP port HTTP
# (RPC and Serf the next two), a server too when SERVER is true, ACLs on
# when ACL is true, a client of the server at SERVERS (host:rpc-port) with
# the cloud fingerprints off, raw_exec on, and its docker driver on the
# dockerd of DIR (start_dockerd DIR); each further argument is one more
# line of its client block.
nomad_agent_hcl() {
	local name=$1 http=$2 dir=$3 server=$4 acl=$5 servers=$6
	shift 6
	cat <<HCL
name      = "$name"
data_dir  = "$dir/nomad"
bind_addr = "127.0.0.1"
log_level = "INFO"
ports {
  http = $http
  rpc  = $((http + 1))
  serf = $((http + 2))
}
advertise {
  http = "127.0.0.1"
  rpc  = "127.0.0.1"
  serf = "127.0.0.1"
}
acl {
  enabled = $acl
}
$(if $server; then printf 'server {\n  enabled          = true\n  bootstrap_expect = 1\n}'; else printf 'server {\n  enabled = false\n}'; fi)
client {
  enabled = true
  servers = ["$servers"]
  options = {
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
$(for line in "$@"; do printf '  %s\n' "$line"; done)
}
plugin "raw_exec" {
  config {
    enabled = true
  }
}
plugin "docker" {
  config {
    endpoint = "unix://$dir/docker.sock"
  }
}
HCL
}
