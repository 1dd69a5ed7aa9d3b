package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/lockfile"
	"github.com/nomad-prefetch/nomad-prefetch/status"
	"github.com/nomad-prefetch/nomad-prefetch/watch"
)

const (
	defaultListen   = "127.0.0.1:9105"
	defaultLockFile = "/run/lock/prefetch.lock"
)

const runDoc = `Usage: prefetch run -config FILE [flags]

The node agent, run as a Nomad system job (or a systemd service): keeps every
image in the config present, forever. It reconciles every image at start,
again whenever the config file changes (it watches the file's directory, so
consul-template's and Nomad's template renames are seen; a burst of changes is
one reload), each image on its resync interval, a failed image on its backoff
schedule, and an image at once when Docker untags or deletes it (Nomad's image
GC). SIGHUP reloads the config and checks every image now.

Every registry and Docker call has a deadline (registry lookups 30s or
stall_timeout, Docker calls 30s, pulls stall_timeout of silence and
pull_timeout in all); a registry that stops answering is skipped, for the
next source, until a probe finds it back, and never holds every fetch slot.

A config that fails to load is logged with every problem's file:line:col and
the agent keeps serving the last good one; fixing the file recovers it. The
file missing at start is an error (exit 2); missing later, a warning.

Only one agent runs per node: a second one exits 2 naming the holder's PID.

Endpoints on -listen:
  /healthz    200 while the agent's loop answers
  /readyz     200 when Docker answers and every image is present, else 503
              saying why (Docker unreachable since ..., images missing)
  /metrics    Prometheus metrics
  /v1/status  per-image state as JSON (what 'prefetch status' prints)

SIGINT or SIGTERM stop it: pulls in flight are cancelled, the lock released,
exit 0.

Example:
  prefetch run -config /local/config.hcl -listen 0.0.0.0:9105 -lock-file /run/lock/prefetch.lock
`

func runDaemon(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("run", runDoc, stdout, stderr)
	cfgPath := fs.String("config", "", "the config file (required); its directory is watched")
	listen := fs.String("listen", defaultListen, "address for /healthz, /readyz, /metrics and /v1/status; empty disables")
	lockPath := fs.String("lock-file", defaultLockFile, "the lock that keeps one agent per node")
	var lf logFlags
	lf.register(fs)
	if code, done := parseFlags(fs, args); done {
		return code
	}
	log, err := lf.logger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "prefetch run: %v\n", err)
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "prefetch run: unexpected arguments %q (see prefetch run -h)\n", fs.Args())
		return exitUsage
	}
	if *cfgPath == "" {
		fmt.Fprintln(stderr, "prefetch run: -config is required (see prefetch run -h)")
		return exitUsage
	}
	// A log shipper that dies closes stderr under the agent: its writes
	// then fail with EPIPE instead of killing the process with SIGPIPE, and
	// the agent keeps the node's images present without its logs.
	signal.Ignore(syscall.SIGPIPE)

	// Watch before the first read: a render landing between the two is then
	// a change the loop sees, not one lost.
	watcher, err := watch.Start(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "prefetch run: %v\n", err)
		return exitUsage
	}
	src, cfg, ok := readConfig("run", *cfgPath, stderr)
	if !ok {
		watcher.Close()
		return exitUsage
	}

	lock, err := lockfile.Acquire(*lockPath)
	if err != nil {
		watcher.Close()
		fmt.Fprintf(stderr, "prefetch run: %v\n", err)
		var held *lockfile.HeldError
		if errors.As(err, &held) {
			return exitUsage
		}
		return exitFailed
	}
	defer lock.Release()

	engine, remote, creds, err := newDocker(cfg)
	if err != nil {
		watcher.Close()
		log.Error(err.Error())
		return exitFailed
	}
	defer engine.Close()

	// Nothing here waits for dockerd: the status endpoints are served
	// whatever it does, and the loop finds out (with deadlines) and says so.
	d := &agent.Daemon{Docker: engine, Events: engine, Remote: remote, Auths: creds, Log: log}
	d.Metrics = status.NewMetrics(d.Snapshot)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stopServer func()
	if *listen != "" {
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			watcher.Close()
			log.Error("listening for the status endpoints", "listen", *listen, "error", err.Error())
			return exitFailed
		}
		srv := &http.Server{Handler: status.Handler(d.Snapshot, d.Alive, d.Metrics), ReadHeaderTimeout: 10 * time.Second}
		served := make(chan struct{})
		go func() { defer close(served); _ = srv.Serve(ln) }()
		stopServer = func() {
			sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer scancel()
			_ = srv.Shutdown(sctx)
			<-served
		}
		log.Info("serving status", "listen", ln.Addr().String())
	}

	changed := make(chan struct{}, 1)
	watchErr := make(chan error, 1)
	go func() {
		watchErr <- watcher.Run(ctx, watch.Debounce{}, func(err error) {
			if err != nil {
				log.Warn("watching the config: events may have been lost; reloading", "error", err.Error())
			}
			select {
			case changed <- struct{}{}:
			default:
			}
		})
	}()
	hup := make(chan struct{}, 1)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP)
	defer signal.Stop(sigs)
	go func() {
		for {
			select {
			case <-sigs:
				select {
				case hup <- struct{}{}:
				default:
				}
			case <-ctx.Done():
				return
			}
		}
	}()

	log.Info("prefetch run started", "version", version, "config", *cfgPath, "images", len(cfg.Images), "lock", *lockPath, "docker", engine.Host())
	runErr := make(chan error, 1)
	go func() { runErr <- d.Run(ctx, *cfgPath, src, cfg, changed, hup) }()

	code := exitOK
	select {
	case err := <-watchErr:
		if err != nil && ctx.Err() == nil {
			// The directory itself went away: nothing can be seen any more.
			log.Error("watching the config stopped", "error", err.Error())
			code = exitFailed
		}
		cancel()
		<-runErr
	case <-runErr:
		cancel()
		<-watchErr
	}
	if stopServer != nil {
		stopServer()
	}
	log.Info("prefetch run stopped")
	return code
}
