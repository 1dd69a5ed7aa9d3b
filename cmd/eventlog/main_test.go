package main

import (
	"encoding/json"
	"errors"
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

func startServer(t *testing.T, opts nomadtest.Options) *nomadtest.Server {
	return nomadtest.StartT(t, opts)
}

func event(i int) nomadtest.Event {
	return nomadtest.Event{Topic: "Job", Type: "JobRegistered", Key: "web", Namespace: "default",
		Payload: json.RawMessage(`{"Job":{"ID":"web","Version":` + strings.Repeat("1", 1+i%3) + `,"SubmitTime":1757000000000000001}}`)}
}

// readState reads the state file as docs/eventlog.md describes it,
// {"index":N}, from outside eventlog; ok is false when there is none.
func readState(path string) (index uint64, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	var s struct {
		Index *uint64 `json:"index"`
	}
	if err := json.Unmarshal(b, &s); err != nil || s.Index == nil {
		return 0, false, fmt.Errorf("state file %q: want {\"index\":N}, got %q", path, b)
	}
	return *s.Index, true, nil
}
