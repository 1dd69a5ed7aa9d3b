// Package daemon owns the lifecycle of `prefetch run`, the node agent: the
// config watch, the lock that keeps one agent per node, the Docker and
// registry clients, the status server and the agent's loop, started in an
// order that never loses a config change and never waits on a peer, and
// stopped in the reverse order. Run is the whole of it; cmd/prefetch only
// turns flags into Options and Run's error into an exit code.
//
// It sits on top of the agent, bundle, discovery, status, metrics, watch and lockfile
// packages and must not be imported by any of them.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/bundle"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/discovery"
	"github.com/nomad-prefetch/nomad-prefetch/foreground"
	"github.com/nomad-prefetch/nomad-prefetch/lockfile"
	"github.com/nomad-prefetch/nomad-prefetch/metrics"
	"github.com/nomad-prefetch/nomad-prefetch/status"
	"github.com/nomad-prefetch/nomad-prefetch/watch"
)

// Options configures Run.
type Options struct {
	// ConfigPath is the config file; its directory is watched.
	ConfigPath string
	// Listen is the address of /healthz, /readyz, /metrics and /v1/status;
	// empty serves nothing.
	Listen string
	// LockFile is the flock that keeps one agent per node.
	LockFile string
	// DockerCallTimeout bounds every Docker call but a pull's stream; zero
	// is registry.DefaultCallTimeout.
	DockerCallTimeout time.Duration
	Log               *slog.Logger
	// Version is logged at start.
	Version string
}

// UsageError is a problem with what Run was asked to do rather than with
// what happened while doing it: the config can't be watched or read or is
// invalid at start, or another agent holds the lock. Err may be a
// config.Errors, to be printed a problem a line.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Run runs the agent until ctx is done (SIGINT or SIGTERM), then cancels
// the pulls in flight, stops serving, releases the lock and returns nil.
// It returns a *UsageError when it can't start for what it was given, and
// another error when it can't start or had to stop for what happened (the
// status address is taken, the watched directory went away).
func Run(ctx context.Context, o Options) error {
	// Watch before the first read: a render landing between the two is then
	// a change the loop sees, not one lost.
	watcher, err := watch.Start(o.ConfigPath)
	if err != nil {
		return &UsageError{err}
	}
	defer watcher.Close()
	src, err := config.ReadFile(o.ConfigPath)
	var cfg config.Config
	if err == nil {
		cfg, err = config.Parse(o.ConfigPath, src)
	}
	if err != nil {
		return &UsageError{err}
	}

	lock, err := lockfile.Acquire(o.LockFile)
	if err != nil {
		if held := (*lockfile.HeldError)(nil); errors.As(err, &held) {
			return &UsageError{err}
		}
		return err
	}
	defer lock.Release()

	clients, err := agent.NewClients(cfg, o.DockerCallTimeout)
	if err != nil {
		return err
	}
	defer clients.Engine.Close()

	// Nothing here waits for dockerd: the status endpoints are served
	// whatever it does, and the loop finds out (with deadlines) and says so.
	loop := &agent.Loop{
		Docker: clients.Engine, Events: clients.Engine, Remote: clients.Remote, Auths: clients.Credentials, Log: o.Log,
		Discoverer: &discovery.Discoverer{Log: o.Log},
		Foreground: &foreground.Watcher{Images: clients.Engine, Log: o.Log}, // yield to Nomad's own pulls
		Bundles:    bundle.NewLoader(clients.Engine, o.Log),                 // the bundle: sources, each loaded once while its file is unchanged
	}
	m := metrics.New(loop.Snapshot)
	loop.Observer = m

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopServer, err := serve(o, status.Handler(loop.Snapshot, loop.Alive, m.Handler()))
	if err != nil {
		return err
	}
	defer stopServer()

	changed := make(chan struct{}, 1)
	watchErr := make(chan error, 1)
	go func() { watchErr <- watcher.Run(ctx, watch.Debounce{}, notify(changed, o.Log)) }()
	hup := make(chan struct{}, 1)
	stopHup := forwardSIGHUP(ctx, hup)
	defer stopHup()

	o.Log.Info("prefetch run started", "version", o.Version, "config", o.ConfigPath, "images", len(cfg.Images), "lock", o.LockFile, "docker", clients.Engine.Host())
	runErr := make(chan error, 1)
	go func() { runErr <- loop.Run(ctx, o.ConfigPath, src, cfg, changed, hup) }()

	select {
	case err = <-watchErr:
		if err != nil && ctx.Err() == nil {
			// The directory itself went away: nothing can be seen any more.
			err = fmt.Errorf("watching the config stopped: %w", err)
		} else {
			err = nil
		}
		cancel()
		<-runErr
	case err = <-runErr:
		cancel()
		<-watchErr
	}
	o.Log.Info("prefetch run stopped")
	return err
}

// serve serves h on o.Listen, if set, until the returned stop is called.
func serve(o Options, h http.Handler) (stop func(), err error) {
	if o.Listen == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("listening for the status endpoints on %s: %w", o.Listen, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	o.Log.Info("serving status", "listen", ln.Addr().String())
	return func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
		<-served
	}, nil
}

// notify is the watcher's callback: one pending change at most, since a
// reload reads whatever the file holds by then.
func notify(changed chan<- struct{}, log *slog.Logger) func(error) {
	return func(err error) {
		if err != nil {
			log.Warn("watching the config: events may have been lost; reloading", "error", err.Error())
		}
		select {
		case changed <- struct{}{}:
		default:
		}
	}
}

// forwardSIGHUP turns each SIGHUP into a (coalesced) send on hup until ctx
// is done or stop is called.
func forwardSIGHUP(ctx context.Context, hup chan<- struct{}) (stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP)
	done := make(chan struct{})
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
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(sigs); close(done) }
}
