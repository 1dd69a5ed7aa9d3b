package nomad

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
)

// hang is how long a test waits for something that must happen before it
// declares a hang. It is a guard, never an assertion on speed.
const hang = 60 * time.Second

// lineSink is an io.Writer that collects complete lines.
type lineSink struct {
	mu      sync.Mutex
	changed chan struct{}
	buf     []byte
	lines   []string
	writes  int
}

func newLineSink() *lineSink { return &lineSink{changed: make(chan struct{})} }

func (s *lineSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	s.buf = append(s.buf, p...)
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			break
		}
		s.lines = append(s.lines, string(s.buf[:i]))
		s.buf = s.buf[i+1:]
	}
	close(s.changed)
	s.changed = make(chan struct{})
	return len(p), nil
}

func (s *lineSink) snapshot() ([]string, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...), s.changed
}

// wait returns the lines once there are at least n.
func (s *lineSink) wait(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.After(hang)
	for {
		lines, changed := s.snapshot()
		if len(lines) >= n {
			return lines
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("got %d lines, want %d: hung; got:\n%s", len(lines), n, strings.Join(lines, "\n"))
		}
	}
}

// logSink is a slog.Handler that keeps records for assertions.
type logSink struct {
	mu      sync.Mutex
	changed chan struct{}
	recs    []string // "LEVEL message key=value ..."
}

func newLogSink() *logSink { return &logSink{changed: make(chan struct{})} }

func (l *logSink) Enabled(context.Context, slog.Level) bool { return true }
func (l *logSink) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logSink) WithGroup(string) slog.Handler            { return l }
func (l *logSink) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	l.recs = append(l.recs, b.String())
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	return nil
}

func (l *logSink) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.recs...)
}

// wait returns the first record containing every one of subs.
func (l *logSink) wait(t *testing.T, subs ...string) string {
	t.Helper()
	deadline := time.After(hang)
	for {
		l.mu.Lock()
		recs, changed := l.recs, l.changed
		l.mu.Unlock()
	next:
		for _, r := range recs {
			for _, s := range subs {
				if !strings.Contains(r, s) {
					continue next
				}
			}
			return r
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no log record contains %q; got:\n%s", subs, strings.Join(recs, "\n"))
		}
	}
}

func (l *logSink) count(subs ...string) int {
	n := 0
next:
	for _, r := range l.all() {
		for _, s := range subs {
			if !strings.Contains(r, s) {
				continue next
			}
		}
		n++
	}
	return n
}

func startServer(t *testing.T, opts nomadtest.Options) *nomadtest.Server {
	return nomadtest.StartT(t, opts)
}

// run is a Streamer running against a test server.
type run struct {
	st     *Streamer
	logs   *logSink
	cancel context.CancelFunc
	done   chan error
}

// noWait makes reconnects immediate: tests run in milliseconds.
func noWait(ctx context.Context, _ time.Duration) error { return ctx.Err() }

func testConfig(cfg Config, logs *logSink) Config {
	if cfg.Topics == nil {
		cfg.Topics = []string{"Job", "Allocation", "Node"}
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "*"
	}
	if cfg.Sleep == nil {
		cfg.Sleep = noWait
	}
	cfg.Logger = slog.New(logs)
	return cfg
}

// startStreamer runs a Streamer into out: a Handler, or a writer the
// events go to as lines (Lines).
func startStreamer(t *testing.T, url string, token func() (string, error), cfg Config, out any, pos Position) *run {
	t.Helper()
	client, err := NewClient(&api.Config{Address: url}, token)
	if err != nil {
		t.Fatal(err)
	}
	logs := newLogSink()
	st := NewStreamer(client, testConfig(cfg, logs))
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{st: st, logs: logs, cancel: cancel, done: make(chan error, 1)}
	h, ok := out.(Handler)
	if !ok {
		h = NewLines(out.(io.Writer), LinesOptions{})
	}
	go func() { r.done <- st.Run(ctx, h, pos) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the run and returns Run's error.
func (r *run) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(hang):
		t.Fatal("Run did not return after cancel")
		return nil
	}
}

// cutAt returns a test server's Cut that cuts the nth frame write (1-based,
// counting every connection's writes; 0: none) as c says.
func cutAt(n int, c nomadtest.Cut) func() nomadtest.Cut {
	var mu sync.Mutex
	writes := 0
	return func() nomadtest.Cut {
		mu.Lock()
		defer mu.Unlock()
		writes++
		if writes == n {
			return c
		}
		return nomadtest.Cut{}
	}
}

// expect returns the lines a client must print for a frame's events.
func expect(index uint64, events ...nomadtest.Event) []string {
	var out []string
	for _, e := range events {
		e.Index = index
		out = append(out, string(nomadtest.Encode(e)))
	}
	return out
}

func diffLines(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("got %d lines, want %d", len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Fatalf("line %d:\n got %.300s\nwant %.300s", i, got[i], want[i])
		}
	}
}

// recorder is a Lines that also records what else the Streamer tells its
// Handler.
type recorder struct {
	*Lines
	mu    sync.Mutex
	ups   int
	downs []error
	disc  []Discontinuity
}

func newRecorder(out io.Writer) *recorder { return &recorder{Lines: NewLines(out, LinesOptions{})} }

func (r *recorder) Up() { r.mu.Lock(); r.ups++; r.mu.Unlock() }

func (r *recorder) Down(err error) { r.mu.Lock(); r.downs = append(r.downs, err); r.mu.Unlock() }

func (r *recorder) Discontinuity(d Discontinuity) error {
	r.mu.Lock()
	r.disc = append(r.disc, d)
	r.mu.Unlock()
	return nil
}
