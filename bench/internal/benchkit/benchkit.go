// Package benchkit is what the benchmark programs under bench/ share: a
// main that is bounded and stops on a signal, their progress lines, and a
// `prefetch run` agent in the program's own process, read through its
// /v1/status.
package benchkit

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/daemon"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
)

// Main runs f with a context that ends at SIGINT or SIGTERM, or once
// timeout has passed, and exits 1 with "name: error" on stderr when f
// fails, or when the test bed's tools (dockerd, ...) are missing.
func Main(name string, timeout time.Duration, f func(ctx context.Context) error) {
	if why := testbed.Missing(); why != "" {
		fmt.Fprintf(os.Stderr, "%s: %s\n", name, why)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("-timeout %s reached", timeout))
	err := f(ctx)
	cancel()
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// Progress writes a line, stamped with the time of day, on stderr.
func Progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// Agent is `prefetch run` (the daemon package) in this process.
type Agent struct {
	Listen string
	// Log is the agent's log file (JSON, debug level).
	Log string

	cancel context.CancelFunc
	done   chan error
	logf   *os.File
}

// StartAgent runs the agent on the config at configPath, listening on
// listen, with its lock and log in dir, and returns once its /v1/status
// answers (or it stopped, or ctx ended).
func StartAgent(ctx context.Context, dir, configPath, listen string) (*Agent, error) {
	logf, err := os.Create(filepath.Join(dir, "prefetch.log"))
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithCancel(ctx)
	a := &Agent{Listen: listen, Log: logf.Name(), cancel: cancel, done: make(chan error, 1), logf: logf}
	go func() {
		a.done <- daemon.Run(actx, daemon.Options{ConfigPath: configPath, Listen: listen, LockFile: filepath.Join(dir, "lock"),
			Log: slog.New(slog.NewJSONHandler(logf, &slog.HandlerOptions{Level: slog.LevelDebug})), Version: "bench"})
	}()
	for {
		if _, err := a.Status(ctx); err == nil {
			return a, nil
		}
		select {
		case err := <-a.done:
			cancel()
			logf.Close()
			return nil, fmt.Errorf("the agent stopped: %v (log %s)", err, a.Log)
		case <-ctx.Done():
			cancel()
			<-a.done
			logf.Close()
			return nil, context.Cause(ctx)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Status reads the agent's /v1/status, within 2 s.
func (a *Agent) Status(ctx context.Context) (agent.Snapshot, error) {
	var s agent.Snapshot
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.Listen+"/v1/status", nil)
	if err != nil {
		return s, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// Stop stops the agent and returns what its run returned.
func (a *Agent) Stop() error {
	a.cancel()
	err := <-a.done
	a.logf.Close()
	return err
}
