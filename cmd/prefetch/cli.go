package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // some images could not be had, or a runtime failure
	exitUsage  = 2 // bad flags or a bad config
	// exitUnasked: status -cluster could not ask some agent (every one
	// that answered has every image): what that node holds is unknown.
	exitUnasked = 3
)

// version is stamped at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

const usage = `prefetch keeps the Docker images a Nomad node needs present before Nomad asks
for them. For each image it pulls the expected reference (exactly what the job
uses, usually on the in-cluster registry); when that registry can't serve it,
it pulls a source registry instead and tags the result locally as the expected
name, so Nomad's docker driver starts the job without pulling.

Usage:
  prefetch <command> [flags]

Commands:
  run        the node agent: keep every image present, watch the config, serve status
  once       pull every image in the config once, print a summary, exit
  bundle     write every image of the config into one file, for nodes no registry serves
  status     print what a running agent is doing (-cluster: every agent, as a matrix)
  wait       the deploy gate: block until every agent has an image (or all of its own)
  stage      put a job's new images on every node that can run it, then (-run) register it
  validate   check a config file and print every problem with file:line:col
  version    print the version

Examples:
  prefetch validate -config /etc/prefetch/config.hcl
  prefetch once -config /etc/prefetch/config.hcl
  prefetch run -config /local/config.hcl
  prefetch status
  prefetch status -cluster
  prefetch wait -timeout 15m -image registry.service.consul:5000/traefik:v3.1.3
  prefetch stage -run -var tag=3.0.1 registry.nomad.hcl
  prefetch once -config config.hcl traefik registry -json
  prefetch bundle -config config.hcl -o bootstrap.tar
  prefetch once -bundle /bootstrap/bootstrap.tar

Run 'prefetch <command> -h' for a command's flags. Exit codes: 0 ok (for once,
status and wait: every image present), 1 some image could not be had (for
wait: not in time) or a runtime failure, 2 usage or config error (or, for
run, another agent holds the lock).
`

// run is the whole program but for process setup; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		return runDaemon(ctx, rest, stdout, stderr)
	case "once":
		return runOnce(ctx, rest, stdout, stderr)
	case "bundle":
		return runBundle(ctx, rest, stdout, stderr)
	case "status":
		return runStatus(ctx, rest, stdout, stderr)
	case "wait":
		return runWait(ctx, rest, stdout, stderr)
	case "stage":
		return runStage(ctx, rest, stdout, stderr)
	case "validate":
		return runValidate(rest, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "prefetch %s\n", version)
		return exitOK
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "prefetch: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
}

// newFlagSet returns a flag set whose -h prints doc, an example and the
// flags to stdout.
func newFlagSet(name, doc string, stdout, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("prefetch "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fs.SetOutput(stdout)
		fmt.Fprint(stdout, doc, "\nFlags:\n")
		fs.PrintDefaults()
		fs.SetOutput(stderr)
	}
	return fs
}

// parseFlags parses args; done is true when the command must return code
// (after -h, or a bad flag). -h prints the command's help to stdout; a bad
// flag is said on stderr with where to look, and nothing goes to stdout,
// which for some commands is a JSON document.
func parseFlags(fs *flag.FlagSet, args []string) (code int, done bool) {
	usage := fs.Usage
	fs.Usage = func() {} // the flag package calls it for -h and for errors alike
	err := fs.Parse(args)
	fs.Usage = usage
	switch {
	case errors.Is(err, flag.ErrHelp):
		usage()
		return exitOK, true
	case err != nil:
		// fs has printed err itself, on stderr.
		fmt.Fprintf(fs.Output(), "see '%s -h'\n", fs.Name())
		return exitUsage, true
	}
	return exitOK, false
}

// parseInterspersed is parseFlags for a command whose arguments and flags
// may come in any order (once -config F traefik -json); it returns the
// arguments, in order. "--" ends the flags: what follows are arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) (rest []string, code int, done bool) {
	for {
		if code, done := parseFlags(fs, args); done {
			return nil, code, true
		}
		left := fs.Args()
		if len(left) == 0 {
			return rest, exitOK, false
		}
		// Parse stopped at an argument, or just after a "--" it consumed.
		if n := len(args) - len(left); n > 0 && args[n-1] == "--" {
			return append(rest, left...), exitOK, false
		}
		rest, args = append(rest, left[0]), left[1:]
	}
}

// parseCommand is the prologue of a command that logs: it registers the
// logging flags on fs, parses args (flags may come before or after the
// arguments) and returns the logger asked for and the arguments; done is
// true when the command must return code (after -h, a bad flag or a bad
// logging flag).
func parseCommand(name string, fs *flag.FlagSet, args []string, stderr io.Writer) (log *slog.Logger, rest []string, code int, done bool) {
	var lf logFlags
	lf.register(fs)
	rest, code, done = parseInterspersed(fs, args)
	if done {
		return nil, nil, code, true
	}
	log, err := lf.logger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "prefetch %s: %v\n", name, err)
		return nil, nil, exitUsage, true
	}
	return log, rest, exitOK, false
}

// logFlags are the logging flags every long-running command takes.
type logFlags struct {
	format, level string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.format, "log-format", "json", "log format on stderr: json or text")
	fs.StringVar(&l.level, "log-level", "info", "lowest level logged: debug, info, warn or error")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("-log-level %q: want debug, info, warn or error", l.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(l.format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format %q: want json or text", l.format)
}
