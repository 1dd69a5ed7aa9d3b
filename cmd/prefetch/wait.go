package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/cluster"
)

const waitDoc = `Usage: prefetch wait [-timeout 10m] [-image REF]... [-provider nomad|consul] [-service prefetch] [-job prefetch] [-token-file FILE]

The deploy gate: blocks until every live agent (every one the service
catalog lists; with Consul, but those on nodes Consul reports down) reports
each -image present, or, with no -image, every image of its own config. An
agent that has not applied a config yet, whose Docker daemon is unreachable,
or that does not answer, is not ready; with -image, an agent whose config does
not list the image yet is not ready either. Progress (nodes ready / total,
which are not and why) goes to stderr, every round that changes it.

A pipeline puts the new image in the agents' config (Consul KV or the Nomad
variable the job renders its config from), waits, then rolls out:

  consul kv put prefetch/images/traefik '{"expected": "registry.service.consul:5000/traefik:v3.1.3", "sources": ["docker.io/library/traefik:v3.1.3"]}'
  prefetch wait -timeout 15m -image registry.service.consul:5000/traefik:v3.1.3
  nomad job run traefik.nomad.hcl

Exits 0 when every live agent is ready, 1 on timeout (listing the nodes still
missing it and why) or when the catalog refuses the token or can't be used,
2 on usage errors (a flag, an -image that is not a valid reference).

Catalog settings come from the standard environment, as for
'prefetch status -cluster': NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, ... or,
with -provider consul, CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_CACERT, ...
Only the -job's own registrations are agents. The agents serve /v1/status on
the node's address only to the bearer token of their -status-token-file:
give it with -token-file (read once, at start).
`

// progressEvery is how often an unchanged progress line is said again.
const progressEvery = time.Minute

func runWait(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("wait", waitDoc, stdout, stderr)
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	interval := fs.Duration("interval", 5*time.Second, "pause between two looks at the cluster")
	var images []string
	fs.Func("image", "an image reference every agent must have present (repeatable); none: every image of each agent's config", func(s string) error {
		ref, err := cluster.NormalizeRef(s)
		if err == nil {
			images = append(images, ref)
		}
		return err
	})
	var cf clusterFlags
	cf.register(fs)
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "prefetch wait: unexpected arguments %q (see prefetch wait -h)\n", fs.Args())
		return exitUsage
	}
	if *timeout <= 0 || *interval < 10*time.Millisecond {
		fmt.Fprintln(stderr, "prefetch wait: -timeout must be positive and -interval at least 10ms (see prefetch wait -h)")
		return exitUsage
	}
	cat, err := cf.catalog()
	if err != nil {
		fmt.Fprintf(stderr, "prefetch wait: %v (see prefetch wait -h)\n", err)
		return exitUsage
	}
	ask, err := cf.ask()
	if err != nil {
		fmt.Fprintf(stderr, "prefetch wait: %v\n", err)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	p := &progress{w: stderr, what: waitingFor(images)}
	last, err := cluster.Wait(ctx, cat, cluster.WaitOptions{
		Gate: cluster.Gate{Images: images}, Ask: ask, Interval: *interval, Progress: p.round,
	})
	switch {
	case err == nil:
		fmt.Fprintf(stderr, "wait: ready: all %d node(s) have %s\n", last.Verdict.Live, p.what)
		return exitOK
	case errors.Is(err, context.DeadlineExceeded):
		fmt.Fprintf(stderr, "wait: timed out after %s waiting for %s\n", *timeout, p.what)
		writePending(stderr, last)
	default:
		fmt.Fprintf(stderr, "prefetch wait: %s\n", clean(err.Error(), maxText))
		writePending(stderr, last)
	}
	return exitFailed
}

// waitingFor says what the gate waits for.
func waitingFor(images []string) string {
	if len(images) == 0 {
		return "every image of its config"
	}
	return strings.Join(images, ", ")
}

// progress prints one line per round that says something new, or that
// has not been said for progressEvery.
type progress struct {
	w      io.Writer
	what   string
	prefix string // the command's name on each line ("": wait)
	last   string
	at     time.Time
}

func (p *progress) round(r cluster.Round) {
	var line string
	switch {
	case r.Err != nil:
		line = "catalog: " + clean(r.Err.Error(), maxText)
	case r.Verdict.Live == 0 && r.Verdict.Elsewhere > 0:
		line = fmt.Sprintf("no node can run the job: %d agent(s) say no group fits theirs", r.Verdict.Elsewhere)
	case r.Verdict.Live == 0:
		line = "no live agent is registered yet"
	default:
		v := r.Verdict
		line = fmt.Sprintf("%d/%d node(s) ready", v.Live-len(v.Pending), v.Live)
		if len(v.Pending) > 0 {
			var names []string
			for _, pd := range v.Pending[:min(len(v.Pending), 10)] {
				names = append(names, clean(pd.Node, maxField))
			}
			line += "; waiting for " + strings.Join(names, ", ")
			if len(v.Pending) > 10 {
				line += fmt.Sprintf(" and %d more", len(v.Pending)-10)
			}
		}
	}
	if line == p.last && time.Since(p.at) < progressEvery {
		return
	}
	p.last, p.at = line, time.Now()
	fmt.Fprintf(p.w, "%s: %s\n", cmp.Or(p.prefix, "wait"), line)
}

// writePending lists the nodes the gate still waits for, and why.
func writePending(w io.Writer, r cluster.Round) {
	if r.Err != nil {
		fmt.Fprintf(w, "the last look at the catalog failed: %s\n", clean(r.Err.Error(), maxText))
		return
	}
	v := r.Verdict
	if v.Live == 0 && v.Elsewhere == 0 {
		fmt.Fprintln(w, "no live agent was registered in the catalog")
		return
	}
	if len(v.Pending) > 0 {
		fmt.Fprintf(w, "%d of %d node(s) still missing it:\n", len(v.Pending), v.Live)
		for _, pd := range v.Pending {
			fmt.Fprintf(w, "  %s %s: %s\n", clean(pd.Node, maxField), clean(pd.Address, maxField), clean(pd.Why, maxText))
		}
	}
	for _, pd := range v.Ignored {
		fmt.Fprintf(w, "  (not waited for: %s %s: %s)\n", clean(pd.Node, maxField), clean(pd.Address, maxField), clean(pd.Why, maxText))
	}
}
