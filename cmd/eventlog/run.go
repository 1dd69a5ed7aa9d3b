package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/nomad-prefetch/nomad-prefetch/eventlog"
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
	var c *eventlog.ConfigError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &u), errors.As(err, &c):
		return exitUsage
	}
	return exitFailure
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

With -ha-lock, several instances (a Nomad job with count = 2) contend for
the lock of a Nomad variable (Nomad 1.7 or later): only the holder streams,
the others wait as healthy standbys. The holder keeps its checkpoint (the
last index written) in the variable, writes events to stdout only once the
checkpoint covers them (in batches, at most every -state-interval), and
stops writing when it cannot renew the lock within -ha-ttl. A new holder
resumes after the checkpoint: a failover neither loses nor repeats events.
A clean stop releases the lock, and a standby takes over at once; after a
crash it takes over once Nomad lets the lock lapse (twice the TTL, then the
lock delay). The token needs read and write on the variable's path.

Nomad client settings come from the standard environment: NOMAD_ADDR (also
unix://path), NOMAD_TOKEN, NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY,
NOMAD_SKIP_VERIFY, NOMAD_TLS_SERVER_NAME, NOMAD_REGION, NOMAD_NAMESPACE.

Usage:
  eventlog [-topic Topic[:Key]]... [-namespace NS] [-index N] [-state-file FILE]
           [-heartbeat-timeout 60s] [-max-frame-bytes 67108864] [-listen ADDR]
           [-log-level info] [-log-format json|text]
  eventlog -ha-lock PATH [-ha-ttl 15s] [-ha-lock-delay 5s] [-ha-namespace NS] ...

Example:
  NOMAD_ADDR=https://nomad.service.consul:4646 NOMAD_TOKEN=... \
    eventlog -topic Job -topic Allocation -namespace prod \
             -state-file /alloc/data/eventlog.state -listen 127.0.0.1:9464

  {"Topic":"Job","Type":"JobRegistered","Key":"web","Namespace":"prod","FilterKeys":null,"Index":4711,"Payload":{"Job":{...}}}

  eventlog -ha-lock nomad/jobs/eventlog/lock -listen 127.0.0.1:9464   # in each of two allocations

Exit codes: 0 stopped by SIGINT/SIGTERM (stdout flushed, state saved, the
HA lock released), 1 runtime failure (stdout closed, state file unwritable),
2 usage or configuration error (also: Nomad refused the HA lock's TTL or
path, or the lock's variable holds an index that is not one).

Flags:
`

// options are the parsed command line: eventlog's options and the logger's.
type options struct {
	eventlog.Options
	logLevel  slog.Level
	logFormat string
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
	o := options{Options: eventlog.Options{Index: nomad.Newest}}
	fs := flag.NewFlagSet("eventlog", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(topicsFlag{&o.Topics}, "topic", "`Topic[:Key]` to subscribe to, repeatable (default: "+strings.Join(eventlog.DefaultTopics(), ", ")+")")
	nsDefault := api.DefaultConfig().Namespace
	if nsDefault == "" {
		nsDefault = "*"
	}
	fs.StringVar(&o.Namespace, "namespace", nsDefault, "namespace to follow, * for every namespace existing at subscribe time; NOMAD_NAMESPACE sets the default")
	fs.Var(indexFlag{&o.Index}, "index", "start at this raft index, inclusive, when there is no state file (or HA checkpoint): 0 replays Nomad's buffer (default newest buffered frame)")
	fs.StringVar(&o.StateFile, "state-file", "", "keep the last written index in `FILE`, so that a restart resumes without loss or repetition")
	fs.DurationVar(&o.StateInterval, "state-interval", time.Second, "write the state file, or the HA checkpoint, at most this often (and at shutdown)")
	fs.DurationVar(&o.HeartbeatTimeout, "heartbeat-timeout", 60*time.Second, "reconnect when nothing, not even a heartbeat, arrives for this long (Nomad sends one every 30s); 0 disables")
	fs.DurationVar(&o.AlertAfter, "alert-after", 6*time.Hour, "log an ongoing outage again at ERROR each time it lasts this much longer")
	fs.IntVar(&o.MaxFrameBytes, "max-frame-bytes", 64<<20, "the longest frame kept, in `bytes` (1024 to 1073741824): a longer one is read through, dropped, logged at ERROR and counted, and the stream goes on after it; bounds the memory one frame takes")
	fs.StringVar(&o.Listen, "listen", "", "serve /healthz and /metrics on this `address` (off by default)")
	fs.StringVar(&o.Address, "address", "", "Nomad address, overriding NOMAD_ADDR")
	fs.StringVar(&o.TokenFile, "token-file", "", "read the token from `FILE` before every connection (e.g. a workload identity's secrets/nomad_token) instead of NOMAD_TOKEN")
	fs.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "json", "json or text")
	fs.StringVar(&o.HALock, "ha-lock", "", "contend with the other instances for the lock of the Nomad variable at `PATH` (e.g. nomad/jobs/eventlog/lock): only the holder streams, and keeps its checkpoint in the variable; excludes -state-file (off by default)")
	fs.StringVar(&o.HANamespace, "ha-namespace", haNamespaceDefault(), "the `namespace` of the -ha-lock variable; NOMAD_NAMESPACE sets the default, else Nomad's default namespace")
	fs.DurationVar(&o.HATTL, "ha-ttl", 15*time.Second, "the -ha-lock's TTL: renewed every third of it; a holder that could not renew it for this long stops writing (Nomad takes 10s to 24h, and uses 15s once the holder has written its checkpoint)")
	fs.DurationVar(&o.HALockDelay, "ha-lock-delay", 5*time.Second, "the -ha-lock's lock delay: once a lock lapses, Nomad keeps it this long before another instance may take it; a standby tries again at least this often")
	redact := fs.Bool("redact", true, "replace each string in the secrets job specs carry (env, docker auth, inline templates, artifact credentials, check headers and bodies, dispatch payloads) with REDACTED, in Job and Allocation events; -redact=false writes them as Nomad sent them")
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
	o.Unredacted = !*redact
	if o.logFormat != "json" && o.logFormat != "text" {
		return o, usagef("-log-format: want json or text, got %q", o.logFormat)
	}
	if o.HeartbeatTimeout < 0 || o.StateInterval < 0 || o.AlertAfter <= 0 {
		return o, usagef("-heartbeat-timeout and -state-interval must not be negative, -alert-after must be positive")
	}
	if o.MaxFrameBytes < minFrameBytes || o.MaxFrameBytes > maxFrameBytes {
		return o, usagef("-max-frame-bytes: want %d to %d, got %d", minFrameBytes, maxFrameBytes, o.MaxFrameBytes)
	}
	return o, checkHA(o.Options)
}

// checkHA checks the HA flags: bounds wide enough for tests, Nomad's own
// (a TTL of 10 s at least) being Nomad's to enforce, with its message.
func checkHA(o eventlog.Options) error {
	switch {
	case o.HALock == "":
		return nil
	case o.StateFile != "":
		return usagef("-ha-lock and -state-file exclude each other: with -ha-lock the checkpoint is kept in the lock's variable")
	case o.HATTL < time.Second || o.HATTL > 24*time.Hour:
		return usagef("-ha-ttl: want 1s to 24h (Nomad takes 10s at least), got %s", o.HATTL)
	case o.HALockDelay < time.Second || o.HALockDelay > time.Hour:
		return usagef("-ha-lock-delay: want 1s to 1h, got %s", o.HALockDelay)
	case o.HANamespace == "*":
		return usagef("-ha-namespace: a variable lives in one namespace, not *")
	}
	return nil
}

// haNamespaceDefault is NOMAD_NAMESPACE (a task's own namespace), unless it
// is "*".
func haNamespaceDefault() string {
	if ns := api.DefaultConfig().Namespace; ns != "*" {
		return ns
	}
	return ""
}

// run is the command: flags in, the error that decides the exit code out.
// eventlog.Run logs why it stopped; run prints only the command line's
// errors.
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
	o.Logger = slog.New(h)
	o.Stdout = stdout
	o.Version = version
	return eventlog.Run(ctx, o.Options)
}
