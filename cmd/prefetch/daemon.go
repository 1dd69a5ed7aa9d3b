package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/daemon"
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

With a nomad block in the config it also keeps the images of every Nomad job
that can run on this node (discovery), fetching a job's new image as soon as
the job is registered.

Every registry and Docker call has a deadline (registry lookups 30s or
stall_timeout, Docker calls 30s, pulls stall_timeout of silence and
pull_timeout in all); a registry that stops answering is skipped, for the
next source, until a probe finds it back, and never holds every fetch slot.

A config that fails to load is logged with every problem's file:line:col and
the agent keeps serving the last good one; fixing the file recovers it. The
file missing at start is an error (exit 2); missing later, a warning.

Only one agent runs per node: a second one exits 2 naming the holder's PID.

Endpoints:
  /healthz    200 while the agent's loop answers
  /readyz     200 when Docker answers and every image is present, else 503
              saying why (Docker unreachable since ..., images missing)
  /metrics    Prometheus metrics
  /v1/status  per-image state as JSON (what 'prefetch status' prints)

/metrics and /v1/status name every image the node keeps and, with discovery,
every namespace's jobs: the cluster's inventory. A -listen on a loopback
address serves everything. A -listen on another address (the node's, where
Nomad's and Consul's checks reach it) serves /healthz and /readyz to anyone
(/readyz then counts images and names none), and /metrics and /v1/status
only to "Authorization: Bearer TOKEN" with the token in -status-token-file
(read again at every request: rotate it by rewriting the file); without
-status-token-file, not at all there. Beside such a -listen, -local-listen
(loopback only) serves everything to anyone on the node. A -listen on every
interface (0.0.0.0:PORT, :PORT) serves everything to connections arriving on
loopback, the rest as on the node's address, and opens no -local-listen.

SIGINT or SIGTERM stop it: pulls in flight are cancelled, the lock released,
exit 0.

Example:
  prefetch run -config /local/config.hcl -listen 10.0.0.5:9105 -status-token-file /secrets/status_token
`

func runDaemon(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("run", runDoc, stdout, stderr)
	cfgPath := fs.String("config", "", "the config file (required); its directory is watched")
	listen := fs.String("listen", defaultListen, "address of the endpoints; not on loopback, /metrics and /v1/status need the bearer token there; empty disables all")
	localListen := fs.String("local-listen", defaultListen, "loopback address serving every endpoint without a token, opened when -listen is a node's address (not loopback, not every interface); empty: none")
	tokenFile := fs.String("status-token-file", "", "a file holding the bearer token that reads /metrics and /v1/status on a -listen that is not loopback (at least 16 characters)")
	lockPath := fs.String("lock-file", defaultLockFile, "the lock that keeps one agent per node")
	log, rest, code, done := parseCommand("run", fs, args, stderr)
	if done {
		return code
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "prefetch run: unexpected arguments %q (see prefetch run -h)\n", rest)
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

	err := daemon.Run(ctx, daemon.Options{
		ConfigPath: *cfgPath, Listen: *listen, LocalListen: *localListen, StatusTokenFile: *tokenFile, LockFile: *lockPath,
		DockerCallTimeout: dockerCallTimeout, Log: log, Version: version,
	})
	var usage *daemon.UsageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &usage):
		var problems config.Errors
		if errors.As(err, &problems) {
			printConfigError(stderr, err)
		} else {
			fmt.Fprintf(stderr, "prefetch run: %v\n", err)
		}
		return exitUsage
	}
	log.Error("prefetch run failed", "error", err.Error())
	return exitFailed
}
