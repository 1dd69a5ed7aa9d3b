package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

// version is set at build time: -ldflags "-X main.version=1.2.3".
var version = "dev"

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError is a bad command line or configuration: exit code 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return &usageError{fmt.Errorf(format, args...)} }

func exitCode(err error) int {
	var u *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &u):
		return exitUsage
	}
	return exitFailure
}

// defaultTopics is every topic a token without management rights may
// subscribe to (the ACL topics need management; Variable is left out: its
// events are not readable with a namespace read-job policy). Listing them
// keeps "*" from ever being sent by default.
var defaultTopics = []string{
	"Job", "Evaluation", "Allocation", "Deployment", "Node", "NodePool",
	"Service", "CSIVolume", "CSIPlugin", "HostVolume",
}

const usageText = `eventlog writes Nomad's event stream to stdout: one JSON object per line,
each event exactly as Nomad sent it (Topic, Type, Key, Namespace, FilterKeys,
Index, Payload), for a log shipper tailing stdout. Its own logs go to stderr.

It reconnects after any drop or stall, resuming from the last index it wrote
so that nothing is lost and nothing repeated; when Nomad no longer holds that
index (it keeps only the last ~100) the gap is logged and counted. With
-state-file a restart resumes the same way. A frame longer than
-max-frame-bytes is skipped: logged at ERROR with its index and size,
counted, and the stream goes on after it.

Nomad client settings come from the standard environment: NOMAD_ADDR (also
unix://path), NOMAD_TOKEN, NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY,
NOMAD_SKIP_VERIFY, NOMAD_TLS_SERVER_NAME, NOMAD_REGION, NOMAD_NAMESPACE.

Usage:
  eventlog [-topic Topic[:Key]]... [-namespace NS] [-index N] [-state-file FILE]
           [-heartbeat-timeout 60s] [-max-frame-bytes 67108864] [-listen ADDR]
           [-log-level info] [-log-format json|text]

Example:
  NOMAD_ADDR=https://nomad.service.consul:4646 NOMAD_TOKEN=... \
    eventlog -topic Job -topic Allocation -namespace prod \
             -state-file /alloc/data/eventlog.state -listen 127.0.0.1:9464

  {"Topic":"Job","Type":"JobRegistered","Key":"web","Namespace":"prod","FilterKeys":null,"Index":4711,"Payload":{"Job":{...}}}

Exit codes: 0 stopped by SIGINT/SIGTERM (stdout flushed, state saved),
1 runtime failure (stdout closed, state file unwritable), 2 usage error.

Flags:
`

// options are the parsed command line.
type options struct {
	topics           []string
	namespace        string
	index            uint64
	stateFile        string
	stateInterval    time.Duration
	heartbeatTimeout time.Duration
	alertAfter       time.Duration
	maxFrameBytes    int
	listen           string
	address          string
	tokenFile        string
	logLevel         slog.Level
	logFormat        string
}

// indexFlag is -index: a number, or "newest".
type indexFlag struct{ v *uint64 }

func (f indexFlag) String() string {
	if f.v == nil || *f.v == nomad.Newest {
		return "newest"
	}
	return strconv.FormatUint(*f.v, 10)
}

func (f indexFlag) Set(s string) error {
	if s == "newest" {
		*f.v = nomad.Newest
		return nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > nomad.Newest {
		return errors.New(`want a raft index (0 replays Nomad's whole buffer) or "newest"`)
	}
	*f.v = n
	return nil
}

type topicsFlag struct{ v *[]string }

func (f topicsFlag) String() string {
	if f.v == nil {
		return ""
	}
	return strings.Join(*f.v, ",")
}

func (f topicsFlag) Set(s string) error {
	parts := strings.Split(s, ":")
	if len(parts) > 2 || parts[0] == "" || (len(parts) == 2 && parts[1] == "") {
		return errors.New("want Topic or Topic:Key, as Nomad spells them (Job, Job:web, Allocation:*)")
	}
	*f.v = append(*f.v, s)
	return nil
}

// The bounds of -max-frame-bytes: a frame of one small event is a few hundred
// bytes; above 1 GiB the limit no longer protects anything.
const (
	minFrameBytes = 1 << 10
	maxFrameBytes = 1 << 30
)

func parseFlags(args []string, stdout io.Writer) (options, error) {
	o := options{index: nomad.Newest}
	fs := flag.NewFlagSet("eventlog", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(topicsFlag{&o.topics}, "topic", "`Topic[:Key]` to subscribe to, repeatable (default: "+strings.Join(defaultTopics, ", ")+")")
	nsDefault := api.DefaultConfig().Namespace
	if nsDefault == "" {
		nsDefault = "*"
	}
	fs.StringVar(&o.namespace, "namespace", nsDefault, "namespace to follow, * for every namespace existing at subscribe time; NOMAD_NAMESPACE sets the default")
	fs.Var(indexFlag{&o.index}, "index", "start at this raft index, inclusive, when there is no state file: 0 replays Nomad's buffer (default newest buffered frame)")
	fs.StringVar(&o.stateFile, "state-file", "", "keep the last written index in `FILE`, so that a restart resumes without loss or repetition")
	fs.DurationVar(&o.stateInterval, "state-interval", time.Second, "write the state file at most this often (and at shutdown)")
	fs.DurationVar(&o.heartbeatTimeout, "heartbeat-timeout", 60*time.Second, "reconnect when nothing, not even a heartbeat, arrives for this long (Nomad sends one every 30s); 0 disables")
	fs.DurationVar(&o.alertAfter, "alert-after", 6*time.Hour, "log an ongoing outage again at ERROR each time it lasts this much longer")
	fs.IntVar(&o.maxFrameBytes, "max-frame-bytes", 64<<20, "the longest frame kept, in `bytes` (1024 to 1073741824): a longer one is read through, dropped, logged at ERROR and counted, and the stream goes on after it; bounds the memory one frame takes")
	fs.StringVar(&o.listen, "listen", "", "serve /healthz and /metrics on this `address` (off by default)")
	fs.StringVar(&o.address, "address", "", "Nomad address, overriding NOMAD_ADDR")
	fs.StringVar(&o.tokenFile, "token-file", "", "read the token from `FILE` before every connection (e.g. a workload identity's secrets/nomad_token) instead of NOMAD_TOKEN")
	fs.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "json", "json or text")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {} // the flag package calls it on every error
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usageText)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return o, err
		}
		return o, usagef("%v (eventlog -h for help)", err)
	}
	if *showVersion {
		fmt.Fprintln(stdout, "eventlog", version)
		return o, flag.ErrHelp
	}
	if fs.NArg() > 0 {
		return o, usagef("unexpected argument %q (eventlog -h for help)", fs.Arg(0))
	}
	if o.logFormat != "json" && o.logFormat != "text" {
		return o, usagef("-log-format: want json or text, got %q", o.logFormat)
	}
	if o.heartbeatTimeout < 0 || o.stateInterval < 0 || o.alertAfter <= 0 {
		return o, usagef("-heartbeat-timeout and -state-interval must not be negative, -alert-after must be positive")
	}
	if o.maxFrameBytes < minFrameBytes || o.maxFrameBytes > maxFrameBytes {
		return o, usagef("-max-frame-bytes: want %d to %d, got %d", minFrameBytes, maxFrameBytes, o.maxFrameBytes)
	}
	if len(o.topics) == 0 {
		o.topics = defaultTopics
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stdout)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "eventlog:", err)
		}
		return err
	}
	hopts := &slog.HandlerOptions{Level: o.logLevel}
	var h slog.Handler = slog.NewJSONHandler(stderr, hopts)
	if o.logFormat == "text" {
		h = slog.NewTextHandler(stderr, hopts)
	}
	log := slog.New(h)
	stats, err := stream(ctx, o, stdout, log)
	var attrs []any
	if stats != nil {
		attrs = append(attrs, "index", stats.FlushedIndex())
	}
	if err != nil {
		log.Error("eventlog stopped", append(attrs, "error", err.Error())...)
		return err
	}
	log.Info("eventlog stopped", attrs...)
	return nil
}

// stream wires the Streamer, the state file and the health endpoint. Its
// stats are nil when it failed before streaming.
func stream(ctx context.Context, o options, stdout io.Writer, log *slog.Logger) (*nomad.Stats, error) {
	cfg := api.DefaultConfig()
	if o.address != "" {
		cfg.Address = o.address
	}
	client, err := nomad.NewClient(cfg, nomad.TokenFromEnvOrFile(o.tokenFile))
	if err != nil {
		return nil, &usageError{err}
	}
	start := nomad.Position{Index: o.index}
	if o.stateFile != "" {
		idx, ok, err := readState(o.stateFile)
		if err != nil {
			return nil, &usageError{err}
		}
		if ok {
			start = nomad.Position{Index: idx, Written: true}
			// Rewriting it proves now, not after the first events, that it can be written.
			if err := writeState(o.stateFile, idx); err != nil {
				return nil, err
			}
		} else if err := checkWritable(o.stateFile); err != nil {
			return nil, err
		}
	}

	stats := new(nomad.Stats)
	st := nomad.NewStreamer(client, nomad.Config{
		Subscription:     nomad.Subscription{Topics: o.topics, Namespace: o.namespace},
		HeartbeatTimeout: o.heartbeatTimeout,
		MaxFrameBytes:    o.maxFrameBytes,
		AlertAfter:       o.alertAfter,
		Logger:           log,
		Stats:            stats,
	})

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	if o.listen != "" {
		ln, err := net.Listen("tcp", o.listen)
		if err != nil {
			return nil, fmt.Errorf("listening for health and metrics: %w", err)
		}
		srv := &http.Server{Handler: handler(stats, time.Now, nomad.DefaultBackoff.Max), ReadHeaderTimeout: 10 * time.Second}
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
	}

	log.Info("eventlog starting", "version", version, "address", client.Address(), "topics", o.topics,
		"namespace", o.namespace, "index", indexFlag{&start.Index}.String(), "resume", start.Written)

	sv := &saver{path: o.stateFile, saved: start.Index, stats: stats}
	if !start.Written {
		sv.saved = 0
	}
	var saveErr error
	if o.stateFile != "" {
		wg.Go(func() {
			t := time.NewTicker(max(o.stateInterval, time.Millisecond))
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if err := sv.save(); err != nil {
						saveErr = err
						cancel()
						return
					}
				}
			}
		})
	}
	err = st.Run(ctx, stdout, start)
	if errors.Is(err, syscall.EPIPE) {
		err = fmt.Errorf("stdout was closed (whatever reads eventlog's output exited or closed it): %w", err)
	}
	cancel()
	wg.Wait()
	if o.stateFile != "" {
		if saveErr != nil {
			return stats, saveErr
		}
		// What was flushed to stdout before a failure is saved too.
		if serr := sv.save(); serr != nil && err == nil {
			err = serr
		}
	}
	return stats, err
}

// saver writes the flushed index to the state file when it changed.
type saver struct {
	path  string
	saved uint64
	stats *nomad.Stats
}

func (s *saver) save() error {
	idx := s.stats.FlushedIndex()
	if idx == 0 || idx == s.saved {
		return nil
	}
	if err := writeState(s.path, idx); err != nil {
		return err
	}
	s.saved = idx
	return nil
}
