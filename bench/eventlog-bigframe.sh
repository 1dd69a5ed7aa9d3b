#!/usr/bin/env bash
# bench/eventlog-bigframe.sh: eventlog's memory with one very large frame in
# the stream: a frame over -max-frame-bytes (skipped) and one exactly at it
# (written), each among small frames, from the test server on 127.0.0.1.
#
#   bash bench/eventlog-bigframe.sh                   # the working tree
#   BASE_REV=1e47160 bash bench/eventlog-bigframe.sh  # and, for comparison, eventlog as of BASE_REV
#
# OVER and AT are the two frame sizes in bytes (default 70 MiB and 64 MiB, the
# default limit), WAIT the seconds a run may take before it is stopped.
# Every step is bounded by a timeout; the script stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

OVER=${OVER:-73400320}
AT=${AT:-67108864}
FRAMES=${FRAMES:-20}
WAIT=${WAIT:-30}

for tool in /usr/bin/time pgrep; do
	command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install -y time procps)" >&2; exit 2; }
done

W=$(mktemp -d)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT

echo "building into $W" >&2
build() { CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=bench" -o "$1" "$2"; }
build "$W/eventlog" ./cmd/eventlog
build "$W/server" ./bench/eventlog/server
if [ -n "${BASE_REV:-}" ]; then
	mkdir "$W/base"
	git archive "$BASE_REV" | tar -x -C "$W/base"
	(cd "$W/base" && build "$W/eventlog-base" ./cmd/eventlog)
fi

# run NAME BIN SIZE: one eventlog run against a server holding FRAMES small
# frames and one of SIZE bytes; prints a table row.
run() {
	local name=$1 bin=$2 size=$3 url frames events tp ep lines want subs skips rss
	timeout $((WAIT + 120)) "$W/server" -frames "$FRAMES" -big-frame-bytes "$size" -close-when-drained=false \
		>"$W/$name.srv" 2>"$W/$name.srv.err" &
	PIDS+=($!)
	for _ in $(seq 1200); do
		[ -s "$W/$name.srv" ] && break
		sleep 0.1
	done
	read -r url frames events _ <"$W/$name.srv" || { echo "bench: server not ready" >&2; cat "$W/$name.srv.err" >&2; exit 1; }
	want=$events
	[ "$size" -gt 67108864 ] && want=$((events - 1)) # the big frame is skipped

	NOMAD_ADDR=$url /usr/bin/time -v -o "$W/$name.time" "$bin" -index 0 -topic Job -topic Allocation \
		-log-level debug >"$W/$name.out" 2>"$W/$name.err" &
	tp=$!
	for _ in $(seq $((WAIT * 5))); do
		[ "$(wc -l <"$W/$name.out")" -ge "$want" ] && break
		sleep 0.2
	done
	ep=$(pgrep -P "$tp" || true)
	[ -n "$ep" ] && kill -TERM "$ep"
	wait "$tp" || true
	kill "${PIDS[-1]}" 2>/dev/null || true

	lines=$(wc -l <"$W/$name.out")
	subs=$(grep -c '"msg":"subscribing"' "$W/$name.err" || true)
	skips=$(grep -c '"msg":"frame skipped' "$W/$name.err" || true)
	rss=$(awk '/Maximum resident/ { printf "%.1f", $NF / 1024 }' "$W/$name.time")
	printf '| %-34s | %9.1f | %5s of %-5s | %13s | %5s | %11s |\n' \
		"$name" "$(awk -v b="$size" 'BEGIN { print b / 1048576 }')" "$lines" "$want" "$subs" "$skips" "$rss"
}

echo
echo "$FRAMES small frames (2 events each) and one big Job frame after the first half; eventlog -index 0, default -max-frame-bytes (64 MiB); a run is stopped once every expected line is out, or after ${WAIT}s"
echo
echo "| eventlog                           | frame MiB | lines written  | subscriptions | skips | max RSS MiB |"
echo "|------------------------------------|-----------|----------------|---------------|-------|-------------|"
run "this tree, frame over the limit" "$W/eventlog" "$OVER"
run "this tree, frame at the limit" "$W/eventlog" "$AT"
if [ -n "${BASE_REV:-}" ]; then
	run "$BASE_REV, frame over the limit" "$W/eventlog-base" "$OVER"
	run "$BASE_REV, frame at the limit" "$W/eventlog-base" "$AT"
fi
