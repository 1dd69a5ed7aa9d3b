package eventlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

// DefaultTopics is every topic a token without management rights may
// subscribe to, as Nomad's event endpoint checks them (nomad/event_endpoint.go
// validateNsOp): Job, Evaluation, Allocation, Deployment, Service and
// CSIPlugin need read-job, CSIVolume csi-read-volume, HostVolume
// host-volume-read, Node node:read. NodePool and the ACL topics need a
// management token, and Variable is left out (its events are secrets).
// Listing them keeps "*" from ever being sent by default.
func DefaultTopics() []string {
	return []string{
		"Job", "Evaluation", "Allocation", "Deployment", "Node",
		"Service", "CSIVolume", "CSIPlugin", "HostVolume",
	}
}

// Options are what Run needs. Nomad client settings not named here come from
// the standard environment (api.DefaultConfig: NOMAD_ADDR, NOMAD_TOKEN,
// NOMAD_CACERT, ...).
type Options struct {
	// Topics, in Nomad's syntax (Job, Job:web, Allocation:*); empty means
	// DefaultTopics.
	Topics []string
	// Namespace to follow; "*" is every namespace existing at subscribe time.
	Namespace string
	// Index is where to start, inclusive, when there is no state file;
	// nomad.Newest asks for the newest frame Nomad buffers.
	Index uint64
	// StateFile keeps the last index written to Stdout, so that a restart
	// resumes after it; empty: none. It is written at most every
	// StateInterval (at least 1 ms) and when Run stops.
	StateFile     string
	StateInterval time.Duration
	// HeartbeatTimeout, AlertAfter and MaxFrameBytes are nomad.Config's.
	HeartbeatTimeout time.Duration
	AlertAfter       time.Duration
	MaxFrameBytes    int
	// Listen is where /healthz and /metrics are served; empty: nowhere.
	Listen string
	// Address overrides NOMAD_ADDR.
	Address string
	// TokenFile is read before every connection, instead of NOMAD_TOKEN.
	TokenFile string
	// Version is logged at start.
	Version string

	// HALock is the path of a Nomad variable (Nomad ≥ 1.7) whose lock
	// makes one of several instances the one that streams; the others wait
	// as standbys. The holder keeps its checkpoint, the last index written,
	// in the variable's items, written at most every StateInterval, and a
	// new holder resumes from it. Empty: no HA, StateFile keeps the
	// position. HANamespace is the variable's namespace ("": Nomad's
	// default), HATTL and HALockDelay the lock's TTL and lock delay.
	HALock      string
	HANamespace string
	HATTL       time.Duration
	HALockDelay time.Duration

	// Unredacted writes the secrets of job specs (RedactedFields: env,
	// docker auth, inline templates, artifact credentials, check headers,
	// dispatch payloads) as Nomad sent them; by default each string in them
	// is replaced by "REDACTED".
	Unredacted bool

	// Stdout receives the events, one per line.
	Stdout io.Writer
	// Logger receives eventlog's own logs; nil discards them.
	Logger *slog.Logger
}

// ConfigError is a failure that is the options' fault, found before
// streaming: an address that does not parse, a state file that does not
// parse. A command exits with its usage code.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// Run streams Nomad's events to o.Stdout until ctx is done, then stops
// cleanly (stdout flushed, the state file written) and returns nil. It
// returns early when it cannot start or when writing to o.Stdout fails. It
// logs its start and its stop, with the error, on o.Logger: the error it
// returns is for the caller's exit code, already logged.
func Run(ctx context.Context, o Options) error {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if len(o.Topics) == 0 {
		o.Topics = DefaultTopics()
	}
	written, err := stream(ctx, o)
	var attrs []any
	if written != nil {
		attrs = append(attrs, "index", written())
	}
	if err != nil {
		o.Logger.Error("eventlog stopped", append(attrs, "error", err.Error())...)
		return err
	}
	o.Logger.Info("eventlog stopped", attrs...)
	return nil
}

// stream wires the client, the health endpoint and then either the HA
// lock or the state file around the Streamer. written, nil when it failed
// before streaming, returns the index of the last frame written to stdout
// and saved (in the state file or the HA checkpoint).
func stream(ctx context.Context, o Options) (written func() uint64, err error) {
	log := o.Logger
	client, err := newClient(o.Address, o.TokenFile)
	if err != nil {
		return nil, err
	}
	var lock *nomad.VarLock
	if o.HALock != "" {
		if o.StateFile != "" {
			return nil, &ConfigError{errors.New("a state file and an HA lock exclude each other: the HA checkpoint is kept in the lock's variable")}
		}
		if lock, err = client.VarLock(o.HALock, o.HANamespace); err != nil {
			return nil, &ConfigError{fmt.Errorf("-ha-lock: %w", err)}
		}
		lock.CallTimeout = min(max(o.HATTL, time.Second), 10*time.Second)
	}
	stats := new(nomad.Stats)
	var state *haState
	if lock != nil {
		state = new(haState)
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if o.Listen != "" {
		if err := serve(ctx, &wg, o.Listen, stats, state, log); err != nil {
			return nil, err
		}
	}
	if lock != nil {
		log.Info("eventlog starting", "version", o.Version, "address", client.Address(), "topics", o.Topics,
			"namespace", o.Namespace, "ha_lock", lock.Path(), "ha_ttl", o.HATTL.String(), "ha_lock_delay", o.HALockDelay.String())
		h := &ha{o: o, client: client, lock: lock, stats: stats, state: state, log: log, now: time.Now}
		err := h.run(ctx)
		if errors.Is(err, syscall.EPIPE) {
			err = fmt.Errorf("stdout was closed (whatever reads eventlog's output exited or closed it): %w", err)
		}
		return state.checkpoint.Load, err
	}
	return streamAlone(ctx, o, client, stats)
}

// streamAlone streams without HA: the position in the state file, if any.
func streamAlone(ctx context.Context, o Options, client *nomad.Client, stats *nomad.Stats) (func() uint64, error) {
	log := o.Logger
	start, err := startPosition(o.StateFile, o.Index)
	if err != nil {
		return nil, err
	}
	st := nomad.NewStreamer(client, nomad.Config{
		Subscription:     nomad.Subscription{Topics: o.Topics, Namespace: o.Namespace},
		HeartbeatTimeout: o.HeartbeatTimeout,
		MaxFrameBytes:    o.MaxFrameBytes,
		ReadBufferSize:   readBytes,
		AlertAfter:       o.AlertAfter,
		Locate:           locate(o),
		Logger:           log,
		Stats:            stats,
	})
	log.Info("eventlog starting", "version", o.Version, "address", client.Address(), "topics", o.Topics,
		"namespace", o.Namespace, "index", indexString(start.Index), "resume", start.Written)

	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sv := &saver{path: o.StateFile, saved: start, stats: stats}
	if !start.Written {
		sv.saved = nomad.Position{}
	}
	var saveErr error
	if o.StateFile != "" {
		wg.Go(func() {
			if saveErr = sv.every(ctx, o.StateInterval); saveErr != nil {
				cancel()
			}
		})
	}
	// A grown pipe lets eventlog run ahead of a reader that takes its
	// lines in bursts, and wakes it less often: 15-25% faster on the
	// benchmark's stream (docs/BENCHMARKS.md).
	if n := growPipe(o.Stdout, pipeBytes); n > 0 {
		log.Debug("stdout is a pipe: its capacity raised", "bytes", n)
	}
	err = st.Run(ctx, lines(o, o.Stdout, writeBytes, nil), start)
	if errors.Is(err, syscall.EPIPE) {
		err = fmt.Errorf("stdout was closed (whatever reads eventlog's output exited or closed it): %w", err)
	}
	cancel()
	wg.Wait()
	if o.StateFile != "" {
		if saveErr != nil {
			return stats.FlushedIndex, saveErr
		}
		// What was flushed to stdout before a failure is saved too.
		if serr := sv.save(); serr != nil && err == nil {
			err = serr
		}
	}
	return stats.FlushedIndex, err
}

func newClient(address, tokenFile string) (*nomad.Client, error) {
	cfg := api.DefaultConfig()
	if address != "" {
		cfg.Address = address
	}
	client, err := nomad.NewClient(cfg, nomad.TokenFromEnvOrFile(tokenFile))
	if err != nil {
		return nil, &ConfigError{err}
	}
	return client, nil
}

// startPosition is where the stream starts: after the index in the state
// file when there is one, else at index.
func startPosition(stateFile string, index uint64) (nomad.Position, error) {
	start := nomad.Position{Index: index}
	if stateFile == "" {
		return start, nil
	}
	pos, ok, err := readState(stateFile)
	if err != nil {
		return start, &ConfigError{err}
	}
	if !ok {
		return start, checkWritable(stateFile)
	}
	// Rewriting it proves now, not after the first events, that it can be written.
	if err := writeState(stateFile, pos); err != nil {
		return start, err
	}
	return pos, nil
}

// serve serves /healthz and /metrics on addr until ctx is done; wg waits
// for the server.
func serve(ctx context.Context, wg *sync.WaitGroup, addr string, stats *nomad.Stats, state *haState, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening for health and metrics: %w", err)
	}
	srv := newServer(handler(stats, state, time.Now, nomad.DefaultBackoff.Max))
	log.Info("serving /healthz and /metrics", "address", ln.Addr().String())
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("health and metrics server stopped", "error", err.Error())
		}
	})
	wg.Go(func() {
		<-ctx.Done()
		_ = srv.Close()
	})
	return nil
}

// newServer bounds what one connection can hold of the health and metrics
// server: a client slow to send its request, slow to read the answer, or
// idle, holds it that long at most (the same bounds as prefetch's status
// server); its headers are bounded too (the endpoints read none).
func newServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
}

// indexString is a start index as the start line logs it.
func indexString(index uint64) string {
	if index == nomad.Newest {
		return "newest"
	}
	return strconv.FormatUint(index, 10)
}

// saver writes the flushed index to the state file when it changed.
type saver struct {
	path  string
	saved nomad.Position
	stats *nomad.Stats
}

// every saves each interval (at least 1 ms) until ctx is done or a save
// fails.
func (s *saver) every(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(max(interval, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.save(); err != nil {
				return err
			}
		}
	}
}

func (s *saver) save() error {
	pos := s.stats.Flushed()
	if pos.Index == 0 || pos == s.saved {
		return nil
	}
	if err := writeState(s.path, pos); err != nil {
		return err
	}
	s.saved = pos
	return nil
}
