package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/status"
)

const statusDoc = `Usage: prefetch status [-addr HOST:PORT] [-token-file FILE] [-json]
       prefetch status -cluster [-by-node] [-json] [-provider nomad|consul] [-service prefetch] [-job prefetch] [-token-file FILE]

Ask a running 'prefetch run' agent what it is doing and print it: per image,
its state (wanted, pulling, present, failed), where the present content came
from, its image ID, failed attempts and the next retry, then each image's last
error. Exits 0 when every image is present, 1 when some are missing, the
agent's Docker daemon is unreachable, or the agent can't be reached.

An agent serves /v1/status to anyone on its loopback listener (the default
-addr, on the node itself), and on the node's address only to the bearer
token of its -status-token-file: give the same token with -token-file. The
token goes to the address asked and nowhere else (no redirect is followed).
What an agent's answer puts on the terminal is stripped of control
characters and cut at a bounded length (-json prints it as it is, escaped).

With -cluster: every agent the service catalog lists (Nomad's
/v1/service/prefetch, or Consul's /v1/health/service/prefetch with
-provider consul; address, token and TLS from NOMAD_ADDR, NOMAD_TOKEN,
NOMAD_CACERT, ... or CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_CACERT, ...),
asked concurrently, -parallel at a time, each within -agent-timeout. It prints a
matrix, one row per image and one column per node (-by-node: the other way
round), each cell present, pulling, failed, missing (or not in the node's
config) or unreachable (the agent did not answer, or its Docker daemon does
not), then the agents it could not ask and why. Only registrations of the -job's
own allocations count (another job may register the same service name).
Exits 0 only when every agent answered and has every image; 1 when an
agent that answered lacks one, or the catalog can't be read; 3 when every
agent that answered has every image but some agent could not be asked (it
did not answer, the catalog reports its node down, or its registration is
not an agent's address): what that node holds is unknown; 2 on usage
errors. A registration whose address is not an IP address or a host name
(0.0.0.0, a multicast address, a port out of range) is not asked. With
-token-file, the token is sent to every agent asked, over plain HTTP.

Example:
  prefetch status
  prefetch status -addr 10.0.0.5:9105 -token-file ~/.prefetch-status-token -json
  NOMAD_ADDR=https://nomad.example:4646 prefetch status -cluster
  prefetch status -cluster -by-node -provider consul -token-file ~/.prefetch-status-token
`

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("status", statusDoc, stdout, stderr)
	addr := fs.String("addr", defaultListen, "the agent's -listen address")
	asJSON := fs.Bool("json", false, "print the agent's JSON as it is (with -cluster: the matrix as JSON)")
	all := fs.Bool("cluster", false, "every agent the service catalog lists, as a matrix")
	byNode := fs.Bool("by-node", false, "with -cluster: one row per node, one column per image")
	var cf clusterFlags
	cf.register(fs)
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "prefetch status: unexpected arguments (see prefetch status -h)")
		return exitUsage
	}
	if err := clusterOnly(fs, *all); err != nil {
		fmt.Fprintf(stderr, "prefetch status: %v (see prefetch status -h)\n", err)
		return exitUsage
	}
	if *all {
		return runClusterStatus(ctx, &cf, *asJSON, *byNode, stdout, stderr)
	}
	token := ""
	if cf.tokenFile != "" {
		var err error
		if token, err = status.ReadToken(cf.tokenFile); err != nil {
			fmt.Fprintf(stderr, "prefetch status: -token-file: %v\n", err)
			return exitUsage
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := status.Fetch(ctx, *addr, token)
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
