#!/usr/bin/env bash
# bench/eventlog-failover.sh: eventlog's HA failover. Two eventlog processes
# contend for a lock on the test server of internal/nomadtest (127.0.0.1),
# which publishes an event every 10 ms; the holder is killed with SIGKILL at
# a random moment after 2 to 4 s of streaming, and the time to the standby's
# first event on stdout is measured, with the events lost and repeated
# across the two outputs (bench/eventlog/failover).
#
#   bash bench/eventlog-failover.sh            # RUNS=10 with a 1 s TTL and lock delay
#   NOMAD_RUNS=3 bash bench/eventlog-failover.sh  # and 3 runs on Nomad's own timings
#
# The test server takes a 1 s TTL; Nomad takes 10 s at least and resets a
# lock to 15 s once its holder writes the items, which the NOMAD_RUNS use
# (-ha-ttl 15s, -ha-lock-delay 5s: the job file's). There is no baseline to
# compare with (eventlog had no failover before): each summary line is put
# next to the bound Nomad's rules give, twice the TTL plus the lock delay.
# Every step is bounded by a timeout; the script stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-10}
NOMAD_RUNS=${NOMAD_RUNS:-0}

W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
echo "building into $W" >&2
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=bench" -o "$W/eventlog" ./cmd/eventlog
go build -o "$W/failover" ./bench/eventlog/failover

echo "$RUNS failovers, -ha-ttl 1s -ha-lock-delay 1s -state-interval 1s (the test server's 1 s minimum); bound 2 x 1s + 1s = 3s"
timeout 900 "$W/failover" -bin "$W/eventlog" -runs "$RUNS" -ttl 1s -delay 1s -min-ttl 1s
if [ "$NOMAD_RUNS" -gt 0 ]; then
	echo
	echo "$NOMAD_RUNS failovers on Nomad's timings: -ha-ttl 15s -ha-lock-delay 5s, TTL reset to 15s by the checkpoint; bound 2 x 15s + 5s = 35s"
	timeout 900 "$W/failover" -bin "$W/eventlog" -runs "$NOMAD_RUNS" -ttl 15s -delay 5s -min-ttl 10s -server-ttl 15s -before 5s -jitter 5s
fi
