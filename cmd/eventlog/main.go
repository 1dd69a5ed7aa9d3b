// Command eventlog writes Nomad's event stream to stdout, one event per line,
// resuming after any drop without loss or repetition. See docs/eventlog.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// Without this, Go's runtime turns a write to a closed stdout or stderr
	// (EPIPE on fd 1 or 2) into a SIGPIPE death: exit 141, no log line, no
	// state saved. Ignored, the write returns EPIPE, and run stops cleanly.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err))
}
