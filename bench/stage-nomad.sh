#!/usr/bin/env bash
# bench/stage-nomad.sh: for a 50 MiB image, the time from a job's
# registration to its task running on a real Nomad, without staging (Nomad
# pulls the image after the registration) and with `prefetch stage -run`
# (the image is on the node before the registration), in one run.
#
#   NOMAD=/path/to/nomad bash bench/stage-nomad.sh      # RUNS=3 of each
#
# Nomad can't be installed from the package registries, so the binary is
# yours to give (the figures in docs/BENCHMARKS.md are Nomad 2.0.5's). The
# script starts, on 127.0.0.1 and in a temporary directory, a private
# dockerd (vfs, no bridge), a registry holding the image, and a one-node
# Nomad agent (server and client, ACLs off) whose docker driver uses that
# dockerd; the prefetch agent runs as a raw_exec job registering the
# service "prefetch", as the system job does. Needs root (dockerd), Go 1.26,
# curl, python3 and Debian's docker.io and docker-registry. Every step is
# bounded by a timeout; the script stops by itself and removes what it made.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/nomad-lib.sh
POLL=0.05 # the waits time the runs

NOMAD=${NOMAD:?set NOMAD to a Nomad binary}
RUNS=${RUNS:-3}
MIB=${MIB:-50}
HTTP=54646 REG=127.0.0.1:55000 AGENT=127.0.0.1:59101

W=$(mktemp -d)
pids=()
cleanup() {
	if [ -n "${NOMAD_ADDR:-}" ]; then
		"$NOMAD" job stop -purge big >/dev/null 2>&1 || true
		"$NOMAD" job stop -purge prefetch >/dev/null 2>&1 || true
	fi
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$W"
}
trap cleanup EXIT

echo "building prefetch into $W" >&2
CGO_ENABLED=0 go build -o "$W/prefetch" ./cmd/prefetch

start_dockerd "$W"
export DOCKER_HOST="unix://$W/docker.sock"

registry_config "$W/registry" "$REG" false
docker-registry serve "$W/registry/config.yml" >"$W/registry.log" 2>&1 &
pids+=($!)
wait_until "the registry" 30 curl -sf "http://$REG/v2/"

echo "building a ${MIB} MiB image" >&2
wait_program "$W/img/rootfs"
head -c "$((MIB << 20))" /dev/urandom >"$W/img/rootfs/blob"
tar -C "$W/img/rootfs" -c . | docker import -c 'CMD ["/wait"]' - "$REG/big:1" >/dev/null
docker push -q "$REG/big:1" >/dev/null
docker rmi -f "$REG/big:1" >/dev/null

nomad_agent_hcl node "$HTTP" "$W" true false "127.0.0.1:$((HTTP + 1))" >"$W/agent.hcl"
"$NOMAD" agent -config "$W/agent.hcl" >"$W/nomad.log" 2>&1 &
pids+=($!)
export NOMAD_ADDR="http://127.0.0.1:$HTTP"
node_ready() {
	curl -sf "$NOMAD_ADDR/v1/nodes" | python3 -c 'import json,sys; n=json.load(sys.stdin); sys.exit(0 if n and n[0]["Status"]=="ready" and n[0]["Drivers"].get("docker",{}).get("Healthy") else 1)'
}
wait_until "Nomad's node (with a healthy docker driver)" 120 node_ready
"$NOMAD" version | head -1 >&2

cat >"$W/big.nomad.hcl" <<HCL
variable "run" {
  type = string
}
job "big" {
  datacenters = ["*"]
  meta {
    run = var.run
  }
  group "g" {
    task "t" {
      driver = "docker"
      config {
        image        = "$REG/big:1"
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
running() { # the job big's allocation of version $1 runs
	curl -sf "$NOMAD_ADDR/v1/job/big/allocations" | python3 -c 'import json,sys
v=int(sys.argv[1]); a=json.load(sys.stdin)
sys.exit(0 if any(x["JobVersion"]==v and x["ClientStatus"]=="running" for x in a) else 1)' "$1"
}
version() { curl -sf "$NOMAD_ADDR/v1/job/big" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Version"])'; }
gone() { ! curl -sf "$NOMAD_ADDR/v1/job/big" >/dev/null; }
absent() { ! docker image inspect "$REG/big:1" >/dev/null 2>&1; }
reset() { # no job big, no image on the node
	"$NOMAD" job stop -purge big >/dev/null 2>&1 || true
	wait_until "the job big gone" 60 gone
	docker rmi -f "$REG/big:1" >/dev/null 2>&1 || true
	wait_until "the image removed" 60 absent
}

echo "without staging: $RUNS runs" >&2
for i in $(seq "$RUNS"); do
	reset
	t0=$(now)
	"$NOMAD" job run -detach -var "run=plain-$i" "$W/big.nomad.hcl" >/dev/null
	wait_until "the task running" 300 running "$(version)"
	echo "$(since "$t0")" >>"$W/plain.s"
	echo "  run $i: $(tail -1 "$W/plain.s") s" >&2
done

echo "starting the prefetch agent (raw_exec job, service prefetch)" >&2
cat >"$W/prefetch.nomad.hcl" <<HCL
job "prefetch" {
  datacenters = ["*"]
  group "agent" {
    network {
      port "http" {
        static = ${AGENT#*:}
      }
    }
    service {
      provider = "nomad"
      name     = "prefetch"
      port     = "http"
      address  = "127.0.0.1"
    }
    task "prefetch" {
      driver = "raw_exec"
      config {
        command = "$W/prefetch"
        args    = ["run", "-config", "local/config.hcl", "-listen", "$AGENT", "-lock-file", "$W/prefetch.lock"]
      }
      env {
        DOCKER_HOST = "unix://$W/docker.sock"
        NODE_ID     = "\${node.unique.id}"
      }
      template {
        destination = "local/config.hcl"
        data        = <<EOT
nomad {
  address     = "$NOMAD_ADDR"
  node_id     = "{{ env "NODE_ID" }}"
  infra_image = "none"
}
EOT
      }
      resources {
        cpu    = 100
        memory = 128
      }
    }
  }
}
HCL
"$NOMAD" job run -detach "$W/prefetch.nomad.hcl" >/dev/null
wait_until "the prefetch agent" 120 curl -sf "http://$AGENT/healthz"

echo "with prefetch stage -run: $RUNS runs" >&2
for i in $(seq "$RUNS"); do
	reset
	s0=$(now)
	"$W/prefetch" stage -run -interval 200ms -var "run=staged-$i" "$W/big.nomad.hcl" >"$W/stage.out" 2>"$W/stage.err" ||
		{ cat "$W/stage.err" >&2; exit 1; }
	t0=$(now) # the registration is the last thing stage does
	wait_until "the task running" 300 running "$(version)"
	echo "$(since "$t0")" >>"$W/staged.s"
	awk -v a="$s0" -v b="$t0" 'BEGIN { printf "%.2f\n", b - a }' >>"$W/staging.s"
	echo "  run $i: staging $(tail -1 "$W/staging.s") s, then $(tail -1 "$W/staged.s") s" >&2
done

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
list() { paste -sd' ' "$1"; }
echo
echo "Image: ${MIB} MiB of random bytes in one layer, from a registry on 127.0.0.1 (no throttle); dockerd $(docker version --format '{{.Server.Version}}') (vfs); $("$NOMAD" version | head -1); median of $RUNS"
echo
echo "| | registration to task running | runs (s) |"
echo "| --- | --- | --- |"
echo "| without staging (Nomad pulls) | $(median <"$W/plain.s") s | $(list "$W/plain.s") |"
echo "| after \`prefetch stage -run\` | $(median <"$W/staged.s") s | $(list "$W/staged.s") |"
echo "| (the staging itself, before the registration) | $(median <"$W/staging.s") s | $(list "$W/staging.s") |"
