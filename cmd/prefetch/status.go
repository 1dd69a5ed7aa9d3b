package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/status"
)

const statusDoc = `Usage: prefetch status [-addr HOST:PORT] [-json]

Ask a running 'prefetch run' agent what it is doing and print it: per image,
its state (wanted, pulling, present, failed), where the present content came
from, its image ID, failed attempts and the next retry, then each image's last
error. Exits 0 when every image is present, 1 when some are missing, the
agent's Docker daemon is unreachable, or the agent can't be reached.

Example:
  prefetch status
  prefetch status -addr 10.0.0.5:9105 -json
`

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("status", statusDoc, stdout, stderr)
	addr := fs.String("addr", defaultListen, "the agent's -listen address")
	asJSON := fs.Bool("json", false, "print the agent's JSON as it is")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "prefetch status: unexpected arguments (see prefetch status -h)")
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := status.Fetch(ctx, *addr)
	if err != nil {
		fmt.Fprintf(stderr, "prefetch status: %v\n", err)
		return exitFailed
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(s)
	} else {
		err = writeStatusTable(stdout, s, time.Now())
	}
	if err != nil {
		fmt.Fprintf(stderr, "prefetch status: %v\n", err)
		return exitFailed
	}
	if ok, _ := s.Ready(); !ok {
		return exitFailed
	}
	return exitOK
}
