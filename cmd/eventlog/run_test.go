package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/eventlog"
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
		{[]string{"-h"}, exitOK, "-ha-lock PATH", ""},
		{[]string{"-ha-lock", "x", "-state-file", "s"}, exitUsage, "", "-ha-lock and -state-file exclude each other"},
		{[]string{"-ha-lock", "x", "-ha-ttl", "500ms"}, exitUsage, "", "-ha-ttl: want 1s to 24h (Nomad takes 10s at least), got 500ms"},
		{[]string{"-ha-lock", "x", "-ha-lock-delay", "0s"}, exitUsage, "", "-ha-lock-delay: want 1s to 1h, got 0s"},
		{[]string{"-ha-lock", "x", "-ha-namespace", "*"}, exitUsage, "", "not *"},
		{[]string{"-ha-lock", "nomad/x", "-address", "http://127.0.0.1:1"}, exitUsage, "", "only nomad/jobs/ and below"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			stdout, stderr := nomadtest.NewBuffer(), nomadtest.NewBuffer()
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
		{&eventlog.ConfigError{Err: errors.New("x")}, 2},
		{fmt.Errorf("wrapped: %w", &eventlog.ConfigError{Err: errors.New("x")}), 2},
		{errors.New("stdout closed"), 1},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%v): got %d, want %d", tt.err, got, tt.want)
		}
	}
}

// A state file that does not parse is a usage error; one that cannot be
// written, a runtime failure.
func TestStateFileExitCodes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	os.WriteFile(path, []byte("12"), 0o644)
	err := run(context.Background(), []string{"-state-file", path, "-address", "http://127.0.0.1:1"}, io.Discard, io.Discard)
	if exitCode(err) != exitUsage {
		t.Errorf("corrupt state file: got %v (exit %d), want a usage error", err, exitCode(err))
	}
	err = run(context.Background(), []string{"-state-file", filepath.Join(dir, "missing", "state"), "-address", "http://127.0.0.1:1"}, io.Discard, io.Discard)
	if exitCode(err) != exitFailure {
		t.Errorf("unwritable state file: got %v (exit %d), want a runtime failure", err, exitCode(err))
	}
}

// The defaults the command line gives eventlog: every namespace (unless
// NOMAD_NAMESPACE says otherwise), the newest frame, and eventlog's default
// topics, which eventlog.Run applies to an empty list.
func TestDefaults(t *testing.T) {
	t.Parallel()
	o, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Namespace != "*" || o.Index != nomad.Newest || len(o.Topics) != 0 {
		t.Errorf("got namespace %q, index %d, topics %q; want *, newest, none", o.Namespace, o.Index, o.Topics)
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
