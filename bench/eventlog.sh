#!/usr/bin/env bash
# bench/eventlog.sh: eventlog's throughput and memory against the usual
# api.EventStream logger and against the copy limit (curl | cat), all reading
# the same generated stream from the test server on 127.0.0.1.
#
#   bash bench/eventlog.sh                   # FRAMES=20000 RUNS=3 by default
#   BASE_REV=03a8f20 bash bench/eventlog.sh  # and eventlog as of BASE_REV, its runs between this tree's
#
# Every step is bounded by a timeout; the script stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

FRAMES=${FRAMES:-20000}
RUNS=${RUNS:-3}

for tool in curl /usr/bin/time; do
	command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install -y curl time)" >&2; exit 2; }
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
for p in cmd/eventlog bench/eventlog/server bench/eventlog/baseline bench/eventlog/count; do
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=bench" -o "$W/$(basename "$p")" "./$p"
done
if [ -n "${BASE_REV:-}" ]; then
	mkdir "$W/base"
	git archive "$BASE_REV" | tar -x -C "$W/base"
	(cd "$W/base" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=bench" -o "$W/eventlog-base" ./cmd/eventlog)
fi

# start_server NAME ARGS...: starts a server, waits for its ready line.
start_server() {
	local name=$1
	shift
	timeout 900 "$W/server" "$@" >"$W/$name.out" 2>"$W/$name.err" &
	PIDS+=($!)
	for _ in $(seq 1200); do
		[ -s "$W/$name.out" ] && return 0
		sleep 0.1
	done
	echo "bench: server $name not ready" >&2
	cat "$W/$name.err" >&2
	exit 1
}

echo "generating $FRAMES frames" >&2
start_server full -frames "$FRAMES"
read -r URL _ EVENTS BYTES <"$W/full.out"
Q="$URL/v1/event/stream?index=0&namespace=*&topic=Job&topic=Allocation"
MB=$(awk -v b="$BYTES" 'BEGIN { printf "%.1f", b / 1e6 }')
echo "stream: $FRAMES frames, $EVENTS events, $MB MB at $URL" >&2

now() { date +%s.%N; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

copy_run() {
	local s e
	s=$(now)
	timeout 120 curl -sN "$Q" | cat >/dev/null
	e=$(now)
	awk -v s="$s" -v e="$e" 'BEGIN { printf "%.3f\n", e - s }'
}

curl_count_run() {
	timeout 120 curl -sN "$Q" | timeout 120 "$W/count" | awk '{ print $3 }'
}

baseline_run() {
	NOMAD_ADDR=$URL timeout 300 "$W/baseline" | timeout 300 "$W/count" >"$W/baseline.count"
	read -r lines _ secs <"$W/baseline.count"
	[ "$lines" = "$EVENTS" ] || echo "bench: baseline wrote $lines lines, want $EVENTS" >&2
	echo "$secs"
}

# eventlog_run N [BIN [ARGS...]]: eventlog (or BIN, with ARGS) under
# /usr/bin/time -v into count, stopped by SIGTERM once count has seen every
# event.
eventlog_run() {
	local i=$1 bin=${2:-$W/eventlog} tp ep
	shift $(($# < 2 ? $# : 2))
	rm -f "$W/fifo"
	mkfifo "$W/fifo"
	NOMAD_ADDR=$URL /usr/bin/time -v -o "$W/time.$i" "$bin" -index 0 -topic Job -topic Allocation \
		-log-level warn "$@" >"$W/fifo" 2>"$W/eventlog.$i.err" &
	tp=$!
	timeout 120 "$W/count" -n "$EVENTS" <"$W/fifo" >"$W/eventlog.$i.count" || true
	ep=$(pgrep -P "$tp" || true)
	[ -n "$ep" ] && kill -TERM "$ep"
	wait "$tp" || true
	read -r lines _ secs <"$W/eventlog.$i.count"
	[ "$lines" = "$EVENTS" ] || echo "bench: eventlog wrote $lines lines, want $EVENTS" >&2
	echo "$secs"
}

echo "copy limit, baseline and eventlog, $RUNS runs each" >&2
for i in $(seq "$RUNS"); do baseline_run; done >"$W/baseline.s"
# The copy limit and eventlog alternate, round by round, so that what else
# the machine does in a round weighs on both: their ratio is taken per round.
for i in $(seq "$RUNS"); do
	copy_run >>"$W/copy.s"
	curl_count_run >>"$W/curlcount.s"
	eventlog_run "$i" >>"$W/eventlog.s"
	# Redaction (on by default) walks every Job and Allocation event.
	eventlog_run "nr$i" "$W/eventlog" -redact=false >>"$W/eventlog-noredact.s"
	[ -z "${BASE_REV:-}" ] || eventlog_run "base$i" "$W/eventlog-base" >>"$W/eventlog-base.s"
done
RSS_FULL=$(for i in $(seq "$RUNS"); do awk '/Maximum resident/ { print $NF }' "$W/time.$i"; done | sort -n | tail -1)

# Idle: connected to a server with nothing new to send.
start_server idle -frames 100 -close-when-drained=false
read -r IDLE_URL _ <"$W/idle.out"
idle_rss() {
	local bin=$1 p
	shift
	NOMAD_ADDR=$IDLE_URL "$bin" "$@" >/dev/null 2>&1 &
	p=$!
	sleep 3
	awk '/VmRSS/ { print $2 }' "/proc/$p/status"
	kill -TERM "$p"
	wait "$p" || true
}
RSS_IDLE=$(idle_rss "$W/eventlog" -log-level warn)
RSS_IDLE_BASE=$(idle_rss "$W/baseline")
[ -z "${BASE_REV:-}" ] || RSS_IDLE_ELB=$(idle_rss "$W/eventlog-base" -log-level warn)

T_COPY=$(median <"$W/copy.s")
T_CURL=$(median <"$W/curlcount.s")
T_BASE=$(median <"$W/baseline.s")
T_EL=$(median <"$W/eventlog.s")
row() { awk -v n="$1" -v t="$2" -v ev="$EVENTS" -v b="$BYTES" -v el="$T_EL" \
	'BEGIN { printf "| %-32s | %7.3f | %9.0f | %7.1f | %10.2f |\n", n, t, ev / t, b / t / 1e6, t / el }'; }

echo
echo "Stream: $FRAMES frames, $EVENTS events, $MB MB (Allocation and Job payloads), median of $RUNS runs"
echo
echo "| reader                           | seconds | events/s  | MB/s    | vs eventlog |"
echo "|----------------------------------|---------|-----------|---------|------------|"
row 'curl -sN URL \| cat (copy limit)' "$T_COPY"
row 'curl -sN URL \| count' "$T_CURL"
row 'api.EventStream logger \| count' "$T_BASE"
row 'eventlog \| count' "$T_EL"
row 'eventlog -redact=false \| count' "$(median <"$W/eventlog-noredact.s")"
if [ -n "${BASE_REV:-}" ]; then
	T_ELB=$(median <"$W/eventlog-base.s")
	row "eventlog $BASE_REV \\| count" "$T_ELB"
fi
echo
echo "eventlog vs api.EventStream logger: $(awk -v a="$T_BASE" -v b="$T_EL" 'BEGIN { printf "%.1fx", a / b }') faster (goal >= 5x)"
echo "eventlog vs copy limit (curl | cat): $(awk -v a="$T_COPY" -v b="$T_EL" 'BEGIN { printf "%.2fx", a / b }') of its speed (goal >= 0.3x)"
echo "eventlog vs copy limit, round by round: median $(paste "$W/copy.s" "$W/eventlog.s" | awk '{ printf "%.2f\n", $1 / $2 }' | median)x, rounds $(paste "$W/copy.s" "$W/eventlog.s" | awk '{ printf "%.2f ", $1 / $2 }')"
echo "eventlog RSS: idle $(awk -v k="$RSS_IDLE" 'BEGIN { printf "%.1f", k / 1024 }') MiB (goal <= 8), full rate max $(awk -v k="$RSS_FULL" 'BEGIN { printf "%.1f", k / 1024 }') MiB (goal <= 16)"
if [ -n "${BASE_REV:-}" ]; then
	echo "eventlog $BASE_REV vs api.EventStream logger: $(awk -v a="$T_BASE" -v b="$T_ELB" 'BEGIN { printf "%.1fx", a / b }'), vs copy limit: $(awk -v a="$T_COPY" -v b="$T_ELB" 'BEGIN { printf "%.2fx", a / b }'), full rate max RSS $(for i in $(seq "$RUNS"); do awk '/Maximum resident/ { print $NF }' "$W/time.base$i"; done | sort -n | tail -1 | awk '{ printf "%.1f", $1 / 1024 }') MiB, idle RSS $(awk -v k="$RSS_IDLE_ELB" 'BEGIN { printf "%.1f", k / 1024 }') MiB"
fi
echo "api.EventStream logger RSS idle: $(awk -v k="$RSS_IDLE_BASE" 'BEGIN { printf "%.1f", k / 1024 }') MiB"
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done # the servers: quiet machine for go test
PIDS=()
echo
echo "go test -run '^\$' -bench . -benchtime 2s ./nomad/"
timeout 300 go test -run '^$' -bench . -benchtime 2s ./nomad/ | grep -E '^Benchmark'
if [ -n "${BASE_REV:-}" ]; then
	echo "$BASE_REV:"
	(cd "$W/base" && timeout 300 go test -run '^$' -bench . -benchtime 2s ./nomad/ | grep -E '^Benchmark')
fi
