package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
)

// The test binary doubles as the eventlog binary for tests that signal or
// kill a real process: with EVENTLOG_TEST_ARGS set it runs main's body.
func TestMain(m *testing.M) {
	if a := os.Getenv("EVENTLOG_TEST_ARGS"); a != "" {
		var args []string
		if err := json.Unmarshal([]byte(a), &args); err != nil {
			panic(err)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := run(ctx, args, os.Stdout, os.Stderr)
		stop()
		os.Exit(exitCode(err))
	}
	os.Exit(m.Run())
}

const hang = 60 * time.Second

// syncBuffer is a goroutine-safe writer whose content can be waited for.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{})} }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.changed)
	s.changed = make(chan struct{})
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor returns the content once cond holds.
func (s *syncBuffer) waitFor(t *testing.T, what string, cond func(string) bool) string {
	t.Helper()
	deadline := time.After(hang)
	for {
		s.mu.Lock()
		str, changed := s.b.String(), s.changed
		s.mu.Unlock()
		if cond(str) {
			return str
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("waiting for %s: hung; got:\n%s", what, str)
		}
	}
}

func (s *syncBuffer) waitLines(t *testing.T, n int) []string {
	t.Helper()
	str := s.waitFor(t, "lines", func(s string) bool { return strings.Count(s, "\n") >= n })
	return strings.Split(strings.TrimSuffix(str, "\n"), "\n")
}

func startServer(t *testing.T, opts nomadtest.Options) *nomadtest.Server {
	return nomadtest.StartT(t, opts)
}

// running is run() in a goroutine.
type running struct {
	stdout, stderr *syncBuffer
	cancel         context.CancelFunc
	done           chan error
}

func startRun(t *testing.T, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{stdout: newSyncBuffer(), stderr: newSyncBuffer(), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- run(ctx, args, r.stdout, r.stderr) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// stop cancels run, as SIGTERM does, and returns its error.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(hang):
		t.Fatal("run did not return after cancel")
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
