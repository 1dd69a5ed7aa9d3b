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
	"github.com/nomad-prefetch/nomad-prefetch/peer"
	"github.com/nomad-prefetch/nomad-prefetch/status"
	"github.com/nomad-prefetch/nomad-prefetch/watch"
)

// Options configures Run.
type Options struct {
	// ConfigPath is the config file; its directory is watched.
	ConfigPath string
	// Listen is the address of the status endpoints; empty serves nothing.
	// Bound to a loopback address it serves all of them to anyone;
	// otherwise (a node's address, where Nomad's and Consul's checks reach
	// it) /healthz and /readyz to anyone, /metrics and /v1/status (the
	// inventory) only with the bearer token of StatusTokenFile, and the
	// whole of them on LocalListen. On every interface (0.0.0.0, ":PORT")
	// it serves everything to connections that arrive on loopback and the
	// rest as on a node's address, and LocalListen is not opened.
	Listen string
	// LocalListen is the loopback address serving every endpoint to
	// anyone, opened only when Listen is a node's address; empty opens
	// none. An address that is not loopback is a UsageError.
	LocalListen string
	// StatusTokenFile holds the bearer token that reads /metrics and
	// /v1/status on a Listen that is not loopback, read again at every
	// request; empty: they are not served there.
	StatusTokenFile string
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

	var token *status.Token
	if o.StatusTokenFile != "" {
		if token, err = status.OpenToken(o.StatusTokenFile, o.Log); err != nil {
			return &UsageError{err}
		}
	}

	clients, err := agent.NewClients(cfg, o.DockerCallTimeout)
	if err != nil {
		return err
	}
	defer clients.Engine.Close()

	// Nothing here waits for dockerd: the status endpoints are served
	// whatever it does, and the loop finds out (with deadlines) and says so.
	disc := &discovery.Discoverer{Log: o.Log, Advertise: advertised(o.Listen), Engine: clients.Engine}
	loop := &agent.Loop{
		Peers:  disc, // the nomad block's peers block
		Docker: clients.Engine, Events: clients.Engine, Remote: clients.Remote, Auths: clients.Credentials, Log: o.Log,
		Discoverer: disc,
		Foreground: &foreground.Watcher{Images: clients.Engine, Log: o.Log}, // yield to Nomad's own pulls
		Bundles:    bundle.NewLoader(clients.Engine, o.Log),                 // the bundle: sources, each loaded once while its file is unchanged
	}
	m := metrics.New(loop.Snapshot)
	loop.Observer = m
	disc.Held, disc.PeerBytes, disc.PeerServe = heldIn(loop.Snapshot), m.PeerBytes, m.PeerServe
	disc.StallTimeout = loop.StallTimeout // the config in force's, at each transfer served

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopServer, err := serve(o, status.Endpoints{Snapshot: loop.Snapshot, Alive: loop.Alive, Metrics: m.Handler(), Relay: disc.Relay(), Peer: disc.Peer()}, token, reachOf)
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

// heldIn is what the agent holds for an expected reference, by its
// snapshot: what the peers are served from.
func heldIn(snapshot func() agent.Snapshot) func(ref string) peer.Held {
	return func(ref string) peer.Held {
		for _, img := range snapshot().Images {
			if img.Expected == ref {
				return peer.Held{Expected: true, State: img.State, ImageID: img.ImageID}
			}
		}
		return peer.Held{}
	}
}

// advertised is the address the other agents reach a -listen at, for the
// relay: the address itself when it names one host and port, "" when it
// names every interface or a port the system picks.
func advertised(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil || port == "0" || port == "" {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return ""
	}
	return listen
}

// timeouts bound a status server: a client that sends its headers
// slowly, reads the answer slowly or keeps an idle connection open holds a
// goroutine and a socket for that long at most.
type timeouts struct{ readHeader, read, write, idle time.Duration }

var defaultTimeouts = timeouts{readHeader: 5 * time.Second, read: 10 * time.Second, write: 30 * time.Second, idle: 60 * time.Second}

// maxHeaderBytes bounds a request's headers (the endpoints read none but
// Authorization).
const maxHeaderBytes = 16 << 10

// newServer is an HTTP server for the status endpoints, bounded by t.
func newServer(h http.Handler, t timeouts) *http.Server {
	return &http.Server{
		Handler: h, ReadHeaderTimeout: t.readHeader, ReadTimeout: t.read, WriteTimeout: t.write, IdleTimeout: t.idle,
		MaxHeaderBytes: maxHeaderBytes,
	}
}

// reach is who can connect to a bound address.
type reach int

const (
	reachLocal  reach = iota // loopback: this host only
	reachAny                 // the unspecified address: every interface, loopback among them
	reachOthers              // a node's address
)

// reachOf classifies a listener's bound address.
func reachOf(a net.Addr) reach {
	tcp, ok := a.(*net.TCPAddr)
	switch {
	case ok && tcp.IP.IsLoopback():
		return reachLocal
	case ok && tcp.IP.IsUnspecified():
		return reachAny
	}
	return reachOthers
}

// serve serves the endpoints on o.Listen, if set, and on o.LocalListen
// when o.Listen is a node's address (reachOf says which a bound address
// is), until the returned stop is called.
func serve(o Options, e status.Endpoints, token *status.Token, reachOf func(net.Addr) reach) (stop func(), err error) {
	if o.Listen == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("listening for the status endpoints on %s: %w", o.Listen, err)
	}
	inventory := "with the bearer token of -status-token-file"
	if token == nil {
		inventory = "to nobody (no -status-token-file)"
	}
	switch reachOf(ln.Addr()) {
	case reachLocal:
		o.Log.Info("serving status", "listen", ln.Addr().String(), "endpoints", "all (loopback)")
		return start(ln, e.Local()), nil
	case reachAny:
		// Every interface: a -local-listen on the same port could not be
		// bound, and is not needed.
		o.Log.Info("serving status", "listen", ln.Addr().String(), "endpoints", "all to connections on loopback; to others /healthz, /readyz, and /metrics and /v1/status "+inventory)
		return start(ln, byLocalAddr(e.Local(), e.Public(token))), nil
	}
	var local net.Listener
	if o.LocalListen != "" {
		if local, err = net.Listen("tcp", o.LocalListen); err != nil {
			ln.Close()
			return nil, fmt.Errorf("listening for the status endpoints on -local-listen %s: %w", o.LocalListen, err)
		}
		if reachOf(local.Addr()) != reachLocal {
			ln.Close()
			local.Close()
			return nil, &UsageError{fmt.Errorf("-local-listen %s is %s, not a loopback address: it serves the inventory to anyone", o.LocalListen, local.Addr())}
		}
	}
	o.Log.Info("serving status", "listen", ln.Addr().String(), "endpoints", "/healthz, /readyz; /metrics and /v1/status "+inventory)
	stopPublic := start(ln, e.Public(token))
	if local == nil {
		return stopPublic, nil
	}
	o.Log.Info("serving status", "listen", local.Addr().String(), "endpoints", "all (loopback)")
	stopLocal := start(local, e.Local())
	return func() { stopPublic(); stopLocal() }, nil
}

// byLocalAddr serves local to the connections that arrived on a loopback
// address, public to the others: a listener on every interface.
func byLocalAddr(local, public http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && reachOf(a) == reachLocal {
			local.ServeHTTP(w, r)
			return
		}
		public.ServeHTTP(w, r)
	})
}

// start serves h on ln until the returned stop is called.
func start(ln net.Listener, h http.Handler) (stop func()) {
	srv := newServer(h, defaultTimeouts)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	return func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
		<-served
	}
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
