// Command prefetch makes sure the Docker images a Nomad node needs are
// present before Nomad asks for them, pulling them from a source registry
// and tagging them as the expected name when the in-cluster registry can't
// serve them. See `prefetch -h`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
