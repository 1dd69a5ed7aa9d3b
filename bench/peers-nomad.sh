#!/usr/bin/env bash
# bench/peers-nomad.sh: the peers (issue 20) on a real Nomad with ACLs on:
# two Nomad client nodes, each with its own private dockerd, a prefetch
# agent on each (a raw_exec system job with the real job's identities,
# template and PREFETCH_* environment, discovery on, the job's ACL policy
# attached), then
#
#   1. the service catalog read with the agent's workload identity
#      (GET /v1/service/prefetch, as discovery/peers.go's reader does);
#   2. the agents' check of one another (GET /v1/peer/image with no token,
#      the default identity, the relay identity), and the relay identity's
#      claims;
#   3. order "last": an image present on node A only, the registry
#      stopped: it must reach node B from A (status source peer:<A>,
#      prefetch_peer_bytes_total); then order "first", the registry back,
#      a new image on neither node: how many times the registry served
#      its blobs (its access log), and where each node got it.
#
#   NOMAD=/path/to/nomad bash bench/peers-nomad.sh
#   KEEP=1 ...   keep the work directory (the Nomad and agent logs, the
#                recorded answers) instead of removing it
#
# Nomad can't be installed from the package registries, so the binary is
# yours to give (docs/BENCHMARKS.md's figures are Nomad 2.0.5's). Everything
# is on 127.0.0.1, ports 56500-56799, in a temporary directory. Needs root
# (dockerd, Nomad's client), Go 1.26, curl, python3 and Debian's docker.io
# and docker-registry. Every wait is bounded; the script stops by itself and
# removes what it made (with KEEP=1, all but the processes).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
. bench/nomad-lib.sh

NOMAD=${NOMAD:?set NOMAD to a Nomad binary}
MIB=${MIB:-8}
REG=127.0.0.1:56500
HTTP_A=56646 HTTP_B=56656 # each with rpc +1, serf +2

# Short: the task API socket lives under the alloc dir (108 bytes at most).
W=$(mktemp -d /tmp/pn.XXXXXX)
pids=()
regpid=
cleanup() {
	set +e
	if [ -n "${NOMAD_TOKEN:-}" ]; then
		"$NOMAD" job stop -purge web >/dev/null 2>&1
		"$NOMAD" job stop -purge prefetch >/dev/null 2>&1
		# A raw_exec task outlives its client (Nomad's executor is made to
		# survive a client restart): wait until the clients stopped them.
		for _ in $(seq 1 120); do
			curl -sf -H "X-Nomad-Token: $NOMAD_TOKEN" "$NOMAD_ADDR/v1/allocations" | python3 -c 'import json,sys
sys.exit(0 if all(a["ClientStatus"] not in ("pending","running") for a in json.load(sys.stdin)) else 1)' && break
			sleep 0.25
		done
	fi
	[ -n "$regpid" ] && kill "$regpid" 2>/dev/null
	# What the agents started (executors, logmons, tasks) outlives them
	# when a task was still running: noted now, ended after them.
	local kids=() q=("${pids[@]}") p
	while [ ${#q[@]} -gt 0 ]; do
		p=${q[0]} q=("${q[@]:1}")
		for c in $(pgrep -P "$p" || true); do kids+=("$c") q+=("$c"); done
	done
	# Clients first, the server last, each dockerd after its client.
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		kill "${pids[$i]}" 2>/dev/null
		wait "${pids[$i]}" 2>/dev/null
	done
	[ -n "$regpid" ] && wait "$regpid" 2>/dev/null
	for p in "${kids[@]}"; do kill "$p" 2>/dev/null; done
	# Nomad's client leaves its alloc dirs' mounts (secrets/ is a tmpfs).
	grep -o " $W/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount "$m" 2>/dev/null; done
	if [ "${KEEP:-}" = 1 ]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
say() { echo "== $*"; }

echo "building prefetch into $W" >&2
CGO_ENABLED=0 go build -o "$W/prefetch" ./cmd/prefetch

start_dockerd "$W/a"
start_dockerd "$W/b"
da() { DOCKER_HOST="unix://$W/a/docker.sock" docker "$@"; }
db() { DOCKER_HOST="unix://$W/b/docker.sock" docker "$@"; }

registry_config "$W/registry" "$REG" true # the access log counts the pulls
start_registry() {
	docker-registry serve "$W/registry/config.yml" >>"$W/registry.log" 2>&1 &
	regpid=$!
	wait_until "the registry" 30 curl -sf "http://$REG/v2/"
}
stop_registry() {
	kill "$regpid"
	wait "$regpid" 2>/dev/null || true
	regpid=
}
start_registry

# Two images of one layer of random bytes each, built on node A's dockerd
# and pushed: app:1 stays on A (as pulled: the same ID and RepoDigests),
# app:2 is removed.
echo "building the images" >&2
mkdir -p "$W/img"
for t in 1 2; do
	rm -rf "$W/img/rootfs" && mkdir -p "$W/img/rootfs"
	head -c "$((MIB << 20))" /dev/urandom >"$W/img/rootfs/blob"
	tar -C "$W/img/rootfs" -c . | da import -c 'CMD ["/blob"]' - "$REG/app:$t" >/dev/null
	da push -q "$REG/app:$t" >/dev/null
done
da rmi -f "$REG/app:2" >/dev/null
# app:3, for a job's task: a program that waits for SIGTERM, on A only too.
rm -rf "$W/img/rootfs"
wait_program "$W/img/rootfs"
tar -C "$W/img/rootfs" -c . | da import -c 'CMD ["/wait"]' - "$REG/app:3" >/dev/null
da push -q "$REG/app:3" >/dev/null
APP1_ID=$(da image inspect -f '{{.Id}}' "$REG/app:1")

agent_conf() { # name http dockerd-dir server? cgroup_parent dynamic-port-base
	local name=$1 http=$2 dir=$3 server=$4 cg=$5 dyn=$6
	nomad_agent_hcl "$name" "$http" "$W/$dir" "$server" true "127.0.0.1:$((HTTP_A + 1))" \
		'network_interface = "lo"' "cgroup_parent     = \"$cg\"" "min_dynamic_port  = $dyn" "max_dynamic_port  = $((dyn + 99))" \
		'meta {' "  docker_host   = \"unix://$W/$dir/docker.sock\"" "  prefetch_lock = \"$W/$dir/prefetch.lock\"" '}'
}
agent_conf node-a "$HTTP_A" a true /nomad 56100 >"$W/a/agent.hcl"
agent_conf node-b "$HTTP_B" b false /nomad-b 56200 >"$W/b/agent.hcl"
"$NOMAD" agent -config "$W/a/agent.hcl" >"$W/a/nomad.log" 2>&1 &
pids+=($!)
export NOMAD_ADDR="http://127.0.0.1:$HTTP_A"
wait_until "Nomad's leader" 60 curl -sf "$NOMAD_ADDR/v1/status/leader"
wait_until "the ACL bootstrap" 60 sh -c "'$NOMAD' acl bootstrap -json >'$W/bootstrap.json'"
NOMAD_TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["SecretID"])' "$W/bootstrap.json")
export NOMAD_TOKEN NOMAD_CLI_SHOW_HINTS=0
"$NOMAD" agent -config "$W/b/agent.hcl" >"$W/b/nomad.log" 2>&1 &
pids+=($!)
nodes_ready() {
	curl -sf -H "X-Nomad-Token: $NOMAD_TOKEN" "$NOMAD_ADDR/v1/nodes" | python3 -c 'import json,sys
n=[x for x in json.load(sys.stdin) if x["Status"]=="ready" and x["Drivers"].get("docker",{}).get("Healthy") and x["Drivers"].get("raw_exec",{}).get("Healthy")]
sys.exit(0 if len(n)==2 else 1)'
}
wait_until "two ready nodes (docker and raw_exec healthy)" 120 nodes_ready
node_id() { curl -sf -H "X-Nomad-Token: $NOMAD_TOKEN" "$NOMAD_ADDR/v1/nodes" | python3 -c 'import json,sys; print([x["ID"] for x in json.load(sys.stdin) if x["Name"]==sys.argv[1]][0])' "$1"; }
NODE_A=$(node_id node-a) NODE_B=$(node_id node-b)
say "$("$NOMAD" version | head -1); ACLs on; node-a $NODE_A (server+client), node-b $NODE_B (client)"

"$NOMAD" acl policy apply -namespace default -job prefetch \
	-description "prefetch: discover the images of the jobs" prefetch nomad/jobs/prefetch-policy.hcl >/dev/null
say "policy nomad/jobs/prefetch-policy.hcl attached to job default/prefetch"

# The registry goes down before the agents start: app:1 is on node A only.
stop_registry
"$NOMAD" var put -force nomad/jobs/prefetch app1="{\"expected\": \"$REG/app:1\"}" >/dev/null

# The real job's task (nomad/jobs/prefetch.nomad.hcl), as raw_exec: the
# same identities, template (prefetch.ctmpl, read at submission) and
# PREFETCH_* environment; per node, the client meta names its dockerd and
# its lock. Its loopback -listen serves everything without a token.
write_job() { # peers order
	cat <<HCL
job "prefetch" {
  type        = "system"
  datacenters = ["*"]
  node_pool   = "all"
  group "prefetch" {
    network {
      port "http" {}
    }
    shutdown_delay = "1s"
    service {
      name     = "prefetch"
      provider = "nomad"
      port     = "http"
      meta {
        nomad_job = "\${NOMAD_JOB_ID}"
      }
      check {
        name     = "alive"
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "5s"
      }
    }
    task "prefetch" {
      driver       = "raw_exec"
      kill_timeout = "10s"
      config {
        command = "$W/prefetch"
        args    = ["run", "-config", "local/config.hcl", "-listen", "\${NOMAD_ADDR_http}",
                   "-lock-file", "\${meta.prefetch_lock}", "-log-level", "debug"]
      }
      env {
        DOCKER_HOST                = "\${meta.docker_host}"
        PREFETCH_CONFIG_SOURCE     = "nomad"
        PREFETCH_VAR_PATH          = "nomad/jobs/prefetch"
        PREFETCH_DISCOVERY         = "true"
        PREFETCH_NOMAD_ADDR        = "unix://\${NOMAD_SECRETS_DIR}/api.sock"
        PREFETCH_NOMAD_TOKEN_FILE  = "\${NOMAD_SECRETS_DIR}/nomad_token"
        PREFETCH_NODE_ID           = "\${node.unique.id}"
        PREFETCH_NOMAD_NAMESPACES  = "[\"*\"]"
        PREFETCH_NOMAD_INFRA_IMAGE = "none"
        PREFETCH_NOMAD_PEERS       = "$1"
      }
      identity {
        file = true
      }
      identity {
        name = "relay"
        aud  = ["nomad-prefetch-relay"]
        file = true
        ttl  = "1h"
      }
      template {
        data        = file("$REPO/nomad/jobs/prefetch.ctmpl")
        destination = "local/config.hcl"
        change_mode = "noop"
      }
      resources {
        cpu    = 100
        memory = 128
      }
    }
  }
}
HCL
}
mgmt() { curl -sf -H "X-Nomad-Token: $NOMAD_TOKEN" "$NOMAD_ADDR$1"; }
# The running allocation of the prefetch job on a node, and its task dir.
alloc_of() {
	mgmt "/v1/job/prefetch/allocations" | python3 -c 'import json,sys
a=[x for x in json.load(sys.stdin) if x["NodeID"]==sys.argv[1] and x["ClientStatus"]=="running" and x["DesiredStatus"]=="run"]
print(a[0]["ID"]) if a else sys.exit(1)' "$1"
}
# The agent's address on a node, from the catalog (management token).
addr_of() {
	mgmt "/v1/service/prefetch" | python3 -c 'import json,sys
r=[x for x in json.load(sys.stdin) if x["NodeID"]==sys.argv[1]]
print("%s:%d" % (r[0]["Address"], r[0]["Port"])) if r else sys.exit(1)' "$1"
}
run_job() { # order
	write_job "$1" >"$W/prefetch.nomad.hcl"
	"$NOMAD" job run -detach "$W/prefetch.nomad.hcl" >/dev/null
	local ver
	ver=$(mgmt /v1/job/prefetch | python3 -c 'import json,sys; print(json.load(sys.stdin)["Version"])')
	both_running() {
		mgmt /v1/job/prefetch/allocations | python3 -c 'import json,sys
v=int(sys.argv[1]); a=json.load(sys.stdin)
sys.exit(0 if len({x["NodeID"] for x in a if x["JobVersion"]==v and x["ClientStatus"]=="running"})==2 else 1)' "$ver"
	}
	wait_until "the prefetch job (version $ver) running on both nodes" 120 both_running
	wait_until "both agents in the catalog" 60 sh -c "[ \"\$(curl -sf -H 'X-Nomad-Token: $NOMAD_TOKEN' '$NOMAD_ADDR/v1/service/prefetch' | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')\" = 2 ]"
	ALLOC_A=$(alloc_of "$NODE_A") ALLOC_B=$(alloc_of "$NODE_B")
	SEC_A=$W/a/nomad/alloc/$ALLOC_A/prefetch/secrets SEC_B=$W/b/nomad/alloc/$ALLOC_B/prefetch/secrets
	AGENT_A=$(addr_of "$NODE_A") AGENT_B=$(addr_of "$NODE_B")
	wait_until "agent a" 60 curl -sf "http://$AGENT_A/healthz"
	wait_until "agent b" 60 curl -sf "http://$AGENT_B/healthz"
}
status_of() { # agent-address image: "state source"
	"$W/prefetch" status -addr "$1" -json 2>/dev/null | python3 -c 'import json,sys
d=json.load(sys.stdin); im=[x for x in d.get("images",[]) if x.get("expected")==sys.argv[1]]
print(im[0].get("state",""), "source=" + (im[0].get("source","") or "-"), "origin=" + (im[0].get("origin","") or "-"), "result=" + (im[0].get("result","") or "-")) if im else print("absent")' "$2" || true
}
present() { [ "$(status_of "$1" "$2" | cut -d' ' -f1)" = present ]; }
peer_bytes() { # agent-address: served= taken=
	curl -sf "http://$1/metrics" | awk '/^prefetch_peer_bytes_total/ { sub(/.*direction="/, ""); sub(/"}/, ""); printf "%s=%d ", $1, $2 }'
}
save_logs() { # phase: the agents' logs, before Nomad collects their allocations
	cp "$W/a/nomad/alloc/$ALLOC_A/alloc/logs/prefetch.stderr.0" "$W/agent-a-$1.log" 2>/dev/null || true
	cp "$W/b/nomad/alloc/$ALLOC_B/alloc/logs/prefetch.stderr.0" "$W/agent-b-$1.log" 2>/dev/null || true
}

say "order \"last\": app:1 on node A only, the registry stopped"
t0=$(now)
run_job last
say "agents: A $AGENT_A (alloc $ALLOC_A), B $AGENT_B (alloc $ALLOC_B)"

# 1. The catalog read with the agent's workload identity.
WI=$(cat "$SEC_A/nomad_token")
RELAY_A=$(cat "$SEC_A/nomad_relay.jwt") RELAY_B=$(cat "$SEC_B/nomad_relay.jwt")
code=$(curl -s -D "$W/service-wi.headers" -o "$W/service-wi.json" -w '%{http_code}' -H "X-Nomad-Token: $WI" "$NOMAD_ADDR/v1/service/prefetch?namespace=default")
say "1. GET /v1/service/prefetch?namespace=default, the default workload identity, HTTP API: $code ($(grep -i '^\(content-type\|x-nomad-index\|x-nomad-knownleader\):' "$W/service-wi.headers" | tr -d '\r' | paste -sd' '))"
code=$(curl -s -o "$W/service-wi-sock.json" -w '%{http_code}' --unix-socket "$SEC_A/api.sock" -H "X-Nomad-Token: $WI" "http://localhost/v1/service/prefetch?namespace=default")
say "   the same through the task API socket (the agent's own path): $code"
python3 - "$W/service-wi.json" <<'PY'
import json, sys
regs = json.load(open(sys.argv[1]))
print("   %d registrations; keys of one: %s" % (len(regs), ",".join(sorted(regs[0])) if regs else "-"))
for r in regs:
    print("   node %s alloc %s job %s address %s:%s" % (r["NodeID"][:8], r["AllocID"][:8], r["JobID"], r["Address"], r["Port"]))
PY
# Is the relay identity (audience nomad-prefetch-relay, sent to every peer
# asked) a Nomad API token? Each read with the default identity, then the
# relay identity.
api() { curl -s -o /dev/null -w '%{http_code}' -H "X-Nomad-Token: $1" "$NOMAD_ADDR$2"; }
for path in /v1/service/prefetch /v1/jobs /v1/job/prefetch /v1/var/nomad/jobs/prefetch "/v1/node/$NODE_A" /v1/agent/self; do
	say "   GET $path: default identity $(api "$WI" "$path"), relay identity $(api "$RELAY_A" "$path")"
done

# 2. The agents' check of one another.
say "2. the relay identity's claims (node A's):"
python3 - "$RELAY_A" <<'PY'
import base64, json, sys
h, p = sys.argv[1].split(".")[:2]
dec = lambda s: json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
print("   header:", json.dumps(dec(h), sort_keys=True))
print("   claims:", json.dumps(dec(p), sort_keys=True))
PY
say "   GET /.well-known/jwks.json (no token): $(curl -s -o "$W/jwks.json" -w '%{http_code}' "$NOMAD_ADDR/.well-known/jwks.json"), $(python3 -c 'import json,sys; k=json.load(open(sys.argv[1]))["keys"]; print(len(k), "keys:", ",".join(x["kid"]+"/"+x["alg"] for x in k))' "$W/jwks.json")"
probe() { # token: status and answer of node A's /v1/peer/image for an image it does not expect
	curl -s -w ' HTTP %{http_code}' ${1:+-H "X-Nomad-Token: $1"} "http://$AGENT_A/v1/peer/image?ref=nothing.invalid/x:1"
}
say "   node A's /v1/peer/image?ref=<not expected>, no token:           $(probe "")"
say "   ... with node B's default identity (aud nomadproject.io):     $(probe "$(cat "$SEC_B/nomad_token")")"
say "   ... with node B's relay identity (aud nomad-prefetch-relay): $(probe "$RELAY_B")"

# 3. The outage: app:1 reaches B from A.
if wait_until "app:1 present on node B" 180 present "$AGENT_B" "$REG/app:1"; then
	ok_last=yes
else
	ok_last=no
fi
took_last=$(since "$t0")
APP1_B=$(db image inspect -f '{{.Id}}' "$REG/app:1" 2>/dev/null || echo none)
say "3. \"last\" (${took_last} s from the job's registration): node A: $(status_of "$AGENT_A" "$REG/app:1"); node B: $(status_of "$AGENT_B" "$REG/app:1")"
say "   node B's image ID $APP1_B (A's $APP1_ID); peer bytes A: $(peer_bytes "$AGENT_A")B: $(peer_bytes "$AGENT_B")"

# "first": the registry back, app:2 (on neither node) expected by both.

# The same outage for a discovered image: a job "web" of two allocations on
# distinct nodes, its image app:3 on A only. Nomad's pull on B fails until
# B's agent has copied the image from A; the task restarts every 5 s.
cat >"$W/web.nomad.hcl" <<HCL
job "web" {
  datacenters = ["*"]
  group "g" {
    count = 2
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }
    restart {
      attempts = 30
      interval = "10m"
      delay    = "5s"
      mode     = "delay"
    }
    task "t" {
      driver = "docker"
      config {
        image        = "$REG/app:3"
        network_mode = "none"
      }
      resources {
        cpu    = 50
        memory = 32
      }
    }
  }
}
HCL
t0=$(now)
"$NOMAD" job run -detach "$W/web.nomad.hcl" >/dev/null
web_running() {
	mgmt /v1/job/web/allocations | python3 -c 'import json,sys
sys.exit(0 if len({x["NodeID"] for x in json.load(sys.stdin) if x["ClientStatus"]=="running"})==2 else 1)'
}
ok_web=yes
wait_until "the job web running on both nodes" 180 web_running || ok_web=no
took_web=$(since "$t0")
web_b=$(mgmt /v1/job/web/allocations | python3 -c 'import json,sys
a=[x for x in json.load(sys.stdin) if x["NodeID"]==sys.argv[1]]
ts=((a[0].get("TaskStates") or {}).get("t") or {}) if a else {}
ev=[e["Type"] + (": " + e["DisplayMessage"][:100] if e["Type"]=="Driver Failure" else "") for e in ts.get("Events") or []]
print("%s, restarts %d; events: %s" % (a[0]["ClientStatus"], ts.get("Restarts", 0), " | ".join(ev[:8]))) if a else print("no allocation")' "$NODE_B")
say "   discovered (job web, app:3 on A only, the registry down): both allocations running: $ok_web (${took_web} s)"
say "   node B: $(status_of "$AGENT_B" "$REG/app:3"); its allocation: $web_b"
say "   peer bytes A: $(peer_bytes "$AGENT_A")B: $(peer_bytes "$AGENT_B")"
"$NOMAD" job stop -purge web >/dev/null
save_logs last
say "order \"first\": the registry up, app:2 on neither node"
start_registry
run_job first
mark=$(wc -l <"$W/registry.log")
t0=$(now)
"$NOMAD" var put -force nomad/jobs/prefetch app1="{\"expected\": \"$REG/app:1\"}" app2="{\"expected\": \"$REG/app:2\"}" >/dev/null
ok_first=yes
wait_until "app:2 present on node A" 180 present "$AGENT_A" "$REG/app:2" || ok_first=no
wait_until "app:2 present on node B" 180 present "$AGENT_B" "$REG/app:2" || ok_first=no
took_first=$(since "$t0")
sleep 1
blobs=$(tail -n +"$((mark + 1))" "$W/registry.log" | grep -c '"GET /v2/app/blobs/' || true)
manifests=$(tail -n +"$((mark + 1))" "$W/registry.log" | grep -c '"GET /v2/app/manifests/' || true)
nblobs=$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)["layers"])+1)' < <(curl -sf -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "http://$REG/v2/app/manifests/2"))
say "   ${took_first} s from the variable's write: node A: $(status_of "$AGENT_A" "$REG/app:2"); node B: $(status_of "$AGENT_B" "$REG/app:2")"
say "   the registry served app:2's blobs $blobs times (the image has $nblobs blobs: config and layers; one pull = $nblobs); manifest GETs $manifests"
say "   peer bytes A: $(peer_bytes "$AGENT_A")B: $(peer_bytes "$AGENT_B")"

save_logs first
for n in a b; do
	python3 - "$W/agent-$n-first.log" "$REG/app:2" "$n" <<'PY'
import datetime, json, sys
loaded = ready = None
for line in open(sys.argv[1]):
    try:
        d = json.loads(line)
    except ValueError:
        continue
    t = datetime.datetime.fromisoformat(d["time"].replace("Z", "+00:00")[:26] + "+00:00")
    if d.get("msg") == "config loaded" and ready is None:
        loaded = t
    if d.get("msg") == "image ready" and d.get("image") == sys.argv[2]:
        ready = (t, d.get("result"), d.get("source", "-"))
if loaded and ready:
    print("== node %s: app:2 %s (%s) %.2f s after its config reload (the rest is Nomad's template re-render)" % (sys.argv[3].upper(), ready[1], ready[2], (ready[0] - loaded).total_seconds()))
PY
done

# Without the job's policy: what the workload identity may still read.
"$NOMAD" acl policy delete prefetch >/dev/null
WI=$(cat "$SEC_A/nomad_token")
say "no policy attached: GET /v1/service/prefetch $(api "$WI" /v1/service/prefetch), GET /v1/jobs $(api "$WI" /v1/jobs), with the default identity"
"$NOMAD" acl policy apply -namespace default -job prefetch prefetch nomad/jobs/prefetch-policy.hcl >/dev/null

echo
one_pull=no
[ "$blobs" = "$nblobs" ] && one_pull=yes
echo "last (registry down, app:1 on A only) reached B: $ok_last; the job web's image reached B: $ok_web; first (registry up, app:2): both have it: $ok_first, one registry pull: $one_pull (blob GETs $blobs for $nblobs blobs)"
[ "$ok_last" = yes ] && [ "$ok_web" = yes ] && [ "$ok_first" = yes ] && [ "$one_pull" = yes ]
