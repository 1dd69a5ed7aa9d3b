package eventlog

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

const hang = 60 * time.Second

// options are cmd/eventlog's defaults, with Nomad at addr.
func options(addr string) Options {
	return Options{
		Address: addr, Namespace: "*", Index: nomad.Newest, StateInterval: time.Second,
		HeartbeatTimeout: 60 * time.Second, AlertAfter: 6 * time.Hour, MaxFrameBytes: 64 << 20,
	}
}

// running is Run in a goroutine.
type running struct {
	stdout, stderr *nomadtest.Buffer
	cancel         context.CancelFunc
	done           chan error
}

// startRun runs Run with o, its events in r.stdout and, unless o.Logger is
// set, its logs in r.stderr (JSON, INFO and above: the command's default).
func startRun(t *testing.T, o Options) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{stdout: nomadtest.NewBuffer(), stderr: nomadtest.NewBuffer(), cancel: cancel, done: make(chan error, 1)}
	o.Stdout = r.stdout
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewJSONHandler(r.stderr, nil))
	}
	go func() { r.done <- Run(ctx, o) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// stop cancels Run, as SIGTERM does, and returns its error.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(hang):
		t.Fatal("Run did not return after cancel")
		return nil
	}
}

func event(i int) nomadtest.Event {
	return nomadtest.Event{Topic: "Job", Type: "JobRegistered", Key: "web", Namespace: "default",
		Payload: json.RawMessage(`{"Job":{"ID":"web","Version":` + strings.Repeat("1", 1+i%3) + `,"SubmitTime":1757000000000000001}}`)}
}

func expected(index uint64, e nomadtest.Event) string {
	e.Index = index
	return string(nomadtest.Encode(e))
}

// stdout holds event lines only, each the event object as Nomad sent it.
func TestStdoutHoldsOnlyEvents(t *testing.T) {
	t.Parallel()
	srv := nomadtest.StartT(t, nomadtest.Options{Heartbeat: time.Millisecond})
	var want []string
	for i := range 5 {
		e := nomadtest.AllocationEvent(i, "web", "default")
		want = append(want, expected(srv.Publish(e, event(i)), e), expected(uint64(i+1), event(i)))
	}
	o := options(srv.URL)
	o.Index = 0
	logs := nomadtest.NewBuffer()
	o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := startRun(t, o)
	r.stdout.WaitLines(t, len(want))
	logs.WaitFor(t, "debug logs", func(s string) bool { return strings.Contains(s, "level=DEBUG") })
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: got %v, want nil", err)
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
	if got := strings.Join(q["topic"], ","); got != strings.Join(DefaultTopics(), ",") {
		t.Errorf("got topics %q, want the default list %q", got, DefaultTopics())
	}
	if q.Get("namespace") != "*" {
		t.Errorf("got namespace %q, want *", q.Get("namespace"))
	}
}

func TestRestartWithStateFile(t *testing.T) {
	t.Parallel()
	srv := nomadtest.StartT(t, nomadtest.Options{})
	o := options(srv.URL)
	o.StateFile = filepath.Join(t.TempDir(), "eventlog.state")
	o.Topics = []string{"Job"}
	o.Index = 0
	var want1, want2 []string
	for i := range 10 {
		want1 = append(want1, expected(srv.Publish(event(i)), event(i)))
	}
	r := startRun(t, o)
	r.stdout.WaitLines(t, 10)
	if err := r.stop(t); err != nil {
		t.Fatalf("first run: got %v, want nil", err)
	}
	if pos, _, err := readState(o.StateFile); pos.Index != 10 || err != nil {
		t.Fatalf("state after the first run: got %+v (%v), want index 10", pos, err)
	}
	for i := 10; i < 15; i++ {
		want2 = append(want2, expected(srv.Publish(event(i)), event(i)))
	}
	r2 := startRun(t, o) // the state file wins over Index
	r2.stdout.WaitLines(t, 5)
	e := event(99)
	want2 = append(want2, expected(srv.Publish(e), e))
	r2.stdout.WaitLines(t, 6)
	if err := r2.stop(t); err != nil {
		t.Fatalf("second run: got %v, want nil", err)
	}
	if got := r.stdout.String(); got != strings.Join(want1, "\n")+"\n" {
		t.Errorf("first run stdout:\n got %s\nwant %s", got, strings.Join(want1, "\n"))
	}
	if got := r2.stdout.String(); got != strings.Join(want2, "\n")+"\n" {
		t.Errorf("second run stdout:\n got %s\nwant %s", got, strings.Join(want2, "\n"))
	}
	if pos, _, _ := readState(o.StateFile); pos.Index != 16 {
		t.Errorf("state after the second run: got %+v, want index 16", pos)
	}
	if strings.Contains(r2.stderr.String(), "gap") {
		t.Errorf("second run reported a gap: %s", r2.stderr.String())
	}
}

// listenAddress is the address of /healthz and /metrics, from the logs.
func listenAddress(t *testing.T, logs string) string {
	t.Helper()
	m := regexp.MustCompile(`"address":"(127\.0\.0\.1:\d+)"`).FindStringSubmatch(logs)
	if m == nil {
		t.Fatalf("no listen address in %s", logs)
	}
	return m[1]
}

func TestHealthAndMetrics(t *testing.T) {
	t.Parallel()
	srv := nomadtest.StartT(t, nomadtest.Options{})
	srv.Publish(event(1))
	o := options(srv.URL)
	o.Index = 0
	o.Listen = "127.0.0.1:0"
	r := startRun(t, o)
	r.stdout.WaitLines(t, 1)
	addr := listenAddress(t, r.stderr.WaitFor(t, "the listen address", func(s string) bool { return strings.Contains(s, "serving /healthz") }))
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
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

// A frame over MaxFrameBytes: skipped, one ERROR line with its index and
// size, counted in the metrics; the events after it are written.
func TestOversizeFrameSkipped(t *testing.T) {
	t.Parallel()
	srv := nomadtest.StartT(t, nomadtest.Options{})
	big := event(2)
	big.Payload = json.RawMessage(`{"Blob":"` + strings.Repeat("x", 8<<10) + `"}`)
	want := []string{expected(srv.Publish(event(1)), event(1))}
	srv.Publish(big)
	want = append(want, expected(srv.Publish(event(3)), event(3)))
	size := len(`{"Index":2,"Events":[]}`) + len(expected(2, big))
	o := options(srv.URL)
	o.Index = 0
	o.Topics = []string{"Job"}
	o.MaxFrameBytes = 4096
	o.Listen = "127.0.0.1:0"
	r := startRun(t, o)
	r.stdout.WaitLines(t, len(want))
	addr := listenAddress(t, r.stderr.WaitFor(t, "the skip", func(s string) bool { return strings.Contains(s, "frame skipped") }))
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: got %v, want nil", err)
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

// The health and metrics server bounds its connections: every timeout is
// set, and headers are bounded.
func TestServerBounds(t *testing.T) {
	t.Parallel()
	s := newServer(http.NotFoundHandler())
	if s.ReadHeaderTimeout <= 0 || s.ReadTimeout <= 0 || s.WriteTimeout <= 0 || s.IdleTimeout <= 0 || s.MaxHeaderBytes <= 0 || s.MaxHeaderBytes > 64<<10 {
		t.Errorf("server bounds: read header %v, read %v, write %v, idle %v, max header bytes %d; want every one set",
			s.ReadHeaderTimeout, s.ReadTimeout, s.WriteTimeout, s.IdleTimeout, s.MaxHeaderBytes)
	}
}

// A restart between two frames of one index: the state file keeps how many
// frames of the index were written, and the next run writes the rest.
func TestRestartWithinAnIndex(t *testing.T) {
	t.Parallel()
	srv := nomadtest.StartT(t, nomadtest.Options{})
	first, second, after := event(1), event(2), event(3)
	srv.PublishAt(5, first)
	o := options(srv.URL)
	o.Index = 0
	o.StateFile = filepath.Join(t.TempDir(), "state")
	r := startRun(t, o)
	r.stdout.WaitLines(t, 1)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if pos, _, err := readState(o.StateFile); pos != (nomad.Position{Index: 5, Written: true, Frames: 1}) || err != nil {
		t.Fatalf("state after the first run: %+v, %v; want index 5, one frame", pos, err)
	}
	srv.PublishAt(5, second) // the index's second frame, after the stop
	srv.PublishAt(6, after)
	r2 := startRun(t, o)
	got := r2.stdout.WaitLines(t, 2)
	if err := r2.stop(t); err != nil {
		t.Fatal(err)
	}
	if want := []string{expected(5, second), expected(6, after)}; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("after the restart:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
