package nomadtest

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// hang is how long Buffer waits for what must come before it declares a
// hang. It is a guard, never an assertion on speed.
const hang = 60 * time.Second

// Buffer is a goroutine-safe io.Writer whose content a test can wait for:
// eventlog's stdout or stderr under test.
type Buffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

// NewBuffer returns an empty Buffer.
func NewBuffer() *Buffer { return &Buffer{changed: make(chan struct{})} }

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.changed)
	s.changed = make(chan struct{})
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// WaitFor returns the content once cond holds.
func (s *Buffer) WaitFor(t testing.TB, what string, cond func(string) bool) string {
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

// WaitLines returns the lines once there are at least n.
func (s *Buffer) WaitLines(t testing.TB, n int) []string {
	t.Helper()
	str := s.WaitFor(t, "lines", func(s string) bool { return strings.Count(s, "\n") >= n })
	return strings.Split(strings.TrimSuffix(str, "\n"), "\n")
}
