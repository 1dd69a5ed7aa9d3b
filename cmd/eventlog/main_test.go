package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binary.dir != "" {
		os.RemoveAll(binary.dir)
	}
	os.Exit(code)
}

var binary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// eventlogBinary builds cmd/eventlog once per test run: tests about the
// process (signals, exit codes, a closed stdout) run the real program.
func eventlogBinary(t *testing.T) string {
	t.Helper()
	binary.once.Do(func() {
		if binary.dir, binary.err = os.MkdirTemp("", "eventlog-test-"); binary.err != nil {
			return
		}
		binary.path = filepath.Join(binary.dir, "eventlog")
		out, err := exec.Command("go", "build", "-o", binary.path, ".").CombinedOutput()
		if err != nil {
			binary.err = fmt.Errorf("building eventlog: %w\n%s", err, out)
		}
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
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
