package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/lockfile"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func options(t *testing.T, cfg string) Options {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.hcl")
	if cfg != "" {
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return Options{
		ConfigPath: path, LockFile: filepath.Join(dir, "lock"), Listen: freeAddr(t),
		DockerCallTimeout: time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// noDocker is a config whose Docker daemon is a socket nobody listens on.
func noDocker(t *testing.T) string {
	return fmt.Sprintf("docker {\n  host = %q\n}\nimage \"a\" { expected = \"127.0.0.1:1/a:1\" }\n", "unix://"+filepath.Join(t.TempDir(), "none.sock"))
}

func TestRunUsageErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var usage *UsageError

	o := options(t, "")
	o.ConfigPath = filepath.Join(t.TempDir(), "no-such-dir", "config.hcl")
	if err := Run(ctx, o); !errors.As(err, &usage) || !strings.Contains(err.Error(), "no-such-dir") {
		t.Errorf("unwatchable directory: got %v, want a UsageError naming it", err)
	}

	o = options(t, "")
	if err := Run(ctx, o); !errors.As(err, &usage) || !strings.Contains(err.Error(), "reading config") {
		t.Errorf("missing file: got %v, want a UsageError reading it", err)
	}

	o = options(t, "image \"a\" {\n  expected = \n}\n")
	var problems config.Errors
	if err := Run(ctx, o); !errors.As(err, &usage) || !errors.As(err, &problems) {
		t.Errorf("invalid config: got %v, want a UsageError holding config.Errors", err)
	}

	o = options(t, noDocker(t))
	held, err := lockfile.Acquire(o.LockFile)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	if err := Run(ctx, o); !errors.As(err, &usage) || !strings.Contains(err.Error(), "holds the lock") {
		t.Errorf("lock held: got %v, want a UsageError naming the holder", err)
	}
}

// Run serves its endpoints whatever Docker does (here: nothing listens),
// says so in /readyz, and returns nil when its context ends.
func TestRunServesAndStops(t *testing.T) {
	t.Parallel()
	o := options(t, noDocker(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o) }()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + o.Listen + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := get("/readyz")
		if code == http.StatusServiceUnavailable && strings.Contains(body, "Docker unreachable since") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: got %d %q, want 503 saying Docker is unreachable", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: got %d, want 200", code)
	}
	if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, "prefetch_docker_up 0") {
		t.Errorf("/metrics: got %d, want 200 with prefetch_docker_up 0", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel: %v, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return within 20s of its context ending")
	}
	if _, err := lockfile.Acquire(o.LockFile); err != nil {
		t.Errorf("the lock was not released: %v", err)
	}
}
