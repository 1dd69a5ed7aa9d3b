package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

func TestUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"-h"}, exitOK, "Example:", ""},
		{[]string{"-version"}, exitOK, "eventlog dev\n", ""},
		{[]string{"-topic", "Job:a:b"}, exitUsage, "", "want Topic or Topic:Key"},
		{[]string{"-topic", ":web"}, exitUsage, "", "want Topic or Topic:Key"},
		{[]string{"-index", "-1"}, exitUsage, "", "want a raft index"},
		{[]string{"-log-level", "loud"}, exitUsage, "", "-log-level"},
		{[]string{"-log-format", "xml"}, exitUsage, "", "want json or text"},
		{[]string{"-heartbeat-timeout", "-1s"}, exitUsage, "", "must not be negative"},
		{[]string{"-nope"}, exitUsage, "", "flag provided but not defined: -nope"},
		{[]string{"extra"}, exitUsage, "", `unexpected argument "extra"`},
		{[]string{"-address", "ftp://x"}, exitUsage, "", "scheme must be http, https or unix"},
		{[]string{"-max-frame-bytes", "1000"}, exitUsage, "", "-max-frame-bytes: want 1024 to 1073741824, got 1000"},
		{[]string{"-h"}, exitOK, "-max-frame-bytes bytes", ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			stdout, stderr := newSyncBuffer(), newSyncBuffer()
			err := run(context.Background(), tt.args, stdout, stderr)
			if got := exitCode(err); got != tt.code {
				t.Errorf("got exit code %d (%v), want %d", got, err, tt.code)
			}
			if tt.stdout == "" && stdout.String() != "" {
				t.Errorf("got stdout %q, want nothing", stdout.String())
			}
			if !strings.Contains(stdout.String(), tt.stdout) {
				t.Errorf("got stdout %q, want it to contain %q", stdout.String(), tt.stdout)
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("got stderr %q, want it to contain %q", stderr.String(), tt.stderr)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{flag.ErrHelp, 0},
		{usagef("bad"), 2},
		{fmt.Errorf("wrapped: %w", &usageError{errors.New("x")}), 2},
		{errors.New("stdout closed"), 1},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%v): got %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestStateFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	if _, ok, err := readState(path); ok || err != nil {
		t.Errorf("missing file: got ok %v err %v, want neither", ok, err)
	}
	if err := writeState(path, 18446744073709551615); err != nil {
		t.Fatal(err)
	}
	if idx, ok, err := readState(path); idx != 18446744073709551615 || !ok || err != nil {
		t.Errorf("got %d %v %v, want the max uint64", idx, ok, err)
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp file left behind: %v", err)
	}
	for _, bad := range []string{"", "{}", `{"index":-1}`, `{"index":1`, "12"} {
		os.WriteFile(path, []byte(bad), 0o644)
		if _, _, err := readState(path); err == nil {
			t.Errorf("state %q: got no error, want one", bad)
		}
	}
	err := run(context.Background(), []string{"-state-file", path, "-address", "http://127.0.0.1:1"}, io.Discard, io.Discard)
	if exitCode(err) != exitUsage {
		t.Errorf("corrupt state file: got %v (exit %d), want a usage error", err, exitCode(err))
	}
	err = run(context.Background(), []string{"-state-file", filepath.Join(dir, "missing", "state"), "-address", "http://127.0.0.1:1"}, io.Discard, io.Discard)
	if exitCode(err) != exitFailure {
		t.Errorf("unwritable state file: got %v (exit %d), want a runtime failure", err, exitCode(err))
	}
}

// stdout holds event lines only, each the event object as Nomad sent it.
func TestStdoutHoldsOnlyEvents(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nomadtest.Options{Heartbeat: time.Millisecond})
	var want []string
	for i := range 5 {
		e := nomadtest.AllocationEvent(i, "web", "default")
		want = append(want, expected(srv.Publish(e, event(i)), e), expected(uint64(i+1), event(i)))
	}
	r := startRun(t, "-address", srv.URL, "-index", "0", "-log-level", "debug", "-log-format", "text")
	r.stdout.waitLines(t, len(want))
	r.stderr.waitFor(t, "debug logs", func(s string) bool { return strings.Contains(s, "level=DEBUG") })
	if err := r.stop(t); err != nil {
		t.Fatalf("run: got %v, want nil", err)
	}
	got := strings.Split(strings.TrimSuffix(r.stdout.String(), "\n"), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("stdout:\n got %.500s\nwant %.500s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, l := range got {
		var e map[string]json.RawMessage
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("stdout line %.80q: %v", l, err)
		}
		for _, k := range []string{"Topic", "Type", "Key", "Namespace", "FilterKeys", "Index", "Payload"} {
			if _, ok := e[k]; !ok {
				t.Errorf("line %.80q: no %s", l, k)
			}
		}
	}
	q := srv.Requests()[0].Query
	if got := strings.Join(q["topic"], ","); got != strings.Join(defaultTopics, ",") {
		t.Errorf("got topics %q, want the default list %q", got, defaultTopics)
	}
	if q.Get("namespace") != "*" {
		t.Errorf("got namespace %q, want *", q.Get("namespace"))
	}
}

func TestRestartWithStateFile(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nomadtest.Options{})
	state := filepath.Join(t.TempDir(), "eventlog.state")
	args := []string{"-address", srv.URL, "-state-file", state, "-topic", "Job"}
	var want1, want2 []string
	for i := range 10 {
		want1 = append(want1, expected(srv.Publish(event(i)), event(i)))
	}
	r := startRun(t, append(args, "-index", "0")...)
	r.stdout.waitLines(t, 10)
	if err := r.stop(t); err != nil {
		t.Fatalf("first run: got %v, want nil", err)
	}
	if idx, _, err := readState(state); idx != 10 || err != nil {
		t.Fatalf("state after the first run: got %d (%v), want 10", idx, err)
	}
	for i := 10; i < 15; i++ {
		want2 = append(want2, expected(srv.Publish(event(i)), event(i)))
	}
	r2 := startRun(t, append(args, "-index", "0")...) // the state file wins over -index
	r2.stdout.waitLines(t, 5)
	e := event(99)
	want2 = append(want2, expected(srv.Publish(e), e))
	r2.stdout.waitLines(t, 6)
	if err := r2.stop(t); err != nil {
		t.Fatalf("second run: got %v, want nil", err)
	}
	if got := r.stdout.String(); got != strings.Join(want1, "\n")+"\n" {
		t.Errorf("first run stdout:\n got %s\nwant %s", got, strings.Join(want1, "\n"))
	}
	if got := r2.stdout.String(); got != strings.Join(want2, "\n")+"\n" {
		t.Errorf("second run stdout:\n got %s\nwant %s", got, strings.Join(want2, "\n"))
	}
	if idx, _, _ := readState(state); idx != 16 {
		t.Errorf("state after the second run: got %d, want 16", idx)
	}
	if strings.Contains(r2.stderr.String(), "gap") {
		t.Errorf("second run reported a gap: %s", r2.stderr.String())
	}
}

func TestHealthAndMetrics(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nomadtest.Options{})
	srv.Publish(event(1))
	r := startRun(t, "-address", srv.URL, "-index", "0", "-listen", "127.0.0.1:0")
	r.stdout.waitLines(t, 1)
	logs := r.stderr.waitFor(t, "the listen address", func(s string) bool { return strings.Contains(s, "serving /healthz") })
	m := regexp.MustCompile(`"address":"(127\.0\.0\.1:\d+)"`).FindStringSubmatch(logs)
	if m == nil {
		t.Fatalf("no listen address in %s", logs)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + m[1] + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "live\n" {
		t.Errorf("healthz: got %d %q, want 200 live", code, body)
	}
	_, body := get("/metrics")
	for _, want := range []string{
		`eventlog_events_written_total{topic="Job"} 1`,
		"eventlog_frames_written_total 1",
		"eventlog_last_index 1",
		"eventlog_gaps_total 0",
		"eventlog_reconnects_total 0",
		"eventlog_subscription_live 1",
		"eventlog_seconds_since_last_frame ",
		"go_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics: no %q in\n%s", want, body)
		}
	}
	r.stop(t)
}

// A frame over -max-frame-bytes: skipped, one ERROR line with its index
// and size, counted in the metrics; the events after it are written.
func TestOversizeFrameSkipped(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nomadtest.Options{})
	big := event(2)
	big.Payload = json.RawMessage(`{"Blob":"` + strings.Repeat("x", 8<<10) + `"}`)
	want := []string{expected(srv.Publish(event(1)), event(1))}
	srv.Publish(big)
	want = append(want, expected(srv.Publish(event(3)), event(3)))
	size := len(`{"Index":2,"Events":[]}`) + len(expected(2, big))
	r := startRun(t, "-address", srv.URL, "-index", "0", "-topic", "Job", "-max-frame-bytes", "4096", "-listen", "127.0.0.1:0")
	r.stdout.waitLines(t, len(want))
	logs := r.stderr.waitFor(t, "the skip", func(s string) bool { return strings.Contains(s, "frame skipped") })
	m := regexp.MustCompile(`"address":"(127\.0\.0\.1:\d+)"`).FindStringSubmatch(logs)
	if m == nil {
		t.Fatalf("no listen address in %s", logs)
	}
	resp, err := http.Get("http://" + m[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := r.stop(t); err != nil {
		t.Fatalf("run: got %v, want nil", err)
	}
	if got := r.stdout.String(); got != strings.Join(want, "\n")+"\n" {
		t.Errorf("stdout:\n got %.300s\nwant %.300s", got, strings.Join(want, "\n"))
	}
	var skips []string
	for _, l := range strings.Split(r.stderr.String(), "\n") {
		if strings.Contains(l, "frame skipped") {
			skips = append(skips, l)
		}
	}
	wantAttrs := fmt.Sprintf(`"last_written":1,"skipped_index":2,"bytes":%d,"max_frame_bytes":4096`, size)
	if len(skips) != 1 || !strings.Contains(skips[0], `"level":"ERROR"`) || !strings.Contains(skips[0], wantAttrs) {
		t.Errorf("got skip lines %q, want one ERROR line with %s", skips, wantAttrs)
	}
	for _, w := range []string{"eventlog_frames_skipped_total 1", "eventlog_reconnects_total 0", "eventlog_frames_written_total 2"} {
		if !strings.Contains(string(metrics), w) {
			t.Errorf("metrics: no %q", w)
		}
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		snap nomad.StatsSnapshot
		code int
	}{
		{"live", nomad.StatsSnapshot{Live: true}, 200},
		{"connecting", nomad.StatsSnapshot{}, 200},
		{"blip", nomad.StatsSnapshot{DownSince: now.Add(-5 * time.Second)}, 200},
		{"outage", nomad.StatsSnapshot{DownSince: now.Add(-time.Minute)}, 503},
		{"refused", nomad.StatsSnapshot{Refused: true, DownSince: now.Add(-time.Second)}, 503},
	}
	for _, tt := range tests {
		if code, msg := health(tt.snap, now, 30*time.Second); code != tt.code {
			t.Errorf("%s: got %d %q, want %d", tt.name, code, msg, tt.code)
		}
	}
}

// child starts the eventlog binary.
func child(t *testing.T, stdout io.Writer, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(eventlogBinary(t), args...)
	cmd.Stdout = stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// SIGTERM: stdout flushed, state written, exit 0; the state names the last
// frame on stdout.
func TestSIGTERMFlushesAndSaves(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nomadtest.Options{})
	state := filepath.Join(t.TempDir(), "state")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := child(t, pw, "-address", srv.URL, "-state-file", state, "-state-interval", "1h", "-index", "0", "-topic", "Job")
	pw.Close()
	for i := range 20 {
		srv.Publish(event(i))
	}
	br := bufio.NewReader(pr)
	for range 20 {
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(br)
	if err := cmd.Wait(); err != nil {
		t.Errorf("after SIGTERM: got %v, want exit 0", err)
	}
	if len(rest) != 0 {
		t.Errorf("got %q after the 20 lines, want nothing", rest)
	}
	if idx, ok, err := readState(state); idx != 20 || !ok || err != nil {
		t.Errorf("state: got %d %v %v, want 20 (written at shutdown)", idx, ok, err)
	}
}

// kill -9 at random moments while the state file is being rewritten: it
// always parses, and never goes backwards.
func TestStateFileSurvivesKill9(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nomadtest.Options{BufferSize: 100000})
	state := filepath.Join(t.TempDir(), "state")
	ctx, cancel := context.WithCancel(context.Background())
	published := make(chan struct{})
	go func() {
		defer close(published)
		tick := time.NewTicker(200 * time.Microsecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				srv.Publish(event(i))
			}
		}
	}()
	defer func() { cancel(); <-published }()

	rnd := rand.New(rand.NewPCG(1, 2))
	var last uint64
	parsed := 0
	for i := range 25 {
		cmd := child(t, io.Discard, "-address", srv.URL, "-state-file", state, "-state-interval", "1ms", "-index", "0", "-topic", "Job")
		// Let it write a few times, then kill it at a random moment.
		deadline := time.Now().Add(hang)
		before, _ := os.Stat(state)
		for {
			if st, err := os.Stat(state); err == nil && (before == nil || !st.ModTime().Equal(before.ModTime())) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("run %d never wrote the state file", i)
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Duration(rnd.IntN(5000)) * time.Microsecond)
		cmd.Process.Kill()
		cmd.Wait()
		idx, ok, err := readState(state)
		if err != nil {
			t.Fatalf("after kill %d: %v", i, err)
		}
		if !ok {
			continue
		}
		parsed++
		if idx < last {
			t.Errorf("after kill %d: state went back from %d to %d", i, last, idx)
		}
		last = idx
	}
	if parsed == 0 {
		t.Error("the state file never existed after a kill, want it to")
	}
}
