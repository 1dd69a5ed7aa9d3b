// Command peers-bench measures peers as a source (issue #20): -nodes
// private dockerds (internal/testbed), one `prefetch run` agent each (the
// daemon package, in process: the production wiring), found through the
// Nomad fake's service catalog and presenting the identities it issues; one
// docker-registry on 127.0.0.1 behind internal/faultproxy (which counts the
// bytes it serves, and with -bandwidth shares one link of that many bytes a
// second between every pull: the site's uplink). A new image of -layers x
// -layer-size is rolled out to every node at once (each agent's config
// gains it in the same moment) in each phase, in one run:
//
//	plain  no peers block: every node pulls it from the registry
//	peers  peers { order = "first" }: one node pulls it, the others copy it
//
// Each phase starts from daemons that hold none of it and reports the bytes
// of blobs the registry served and the time from the config change until
// every node has it. Markdown on stdout, progress on stderr; it stops by
// itself (-timeout) and on SIGINT/SIGTERM, and removes everything it
// started. Run it through bench/peers.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/bench/internal/benchkit"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/internal/faultproxy"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
)

type options struct {
	phases     string
	nodes      int
	layers     int
	layerSize  int
	bandwidth  int
	reps       int
	maxServing int
	logs       string
	timeout    time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.phases, "run", "plain,peers", "phases, comma-separated, run in this order each repetition")
	flag.IntVar(&o.nodes, "nodes", 4, "nodes (a dockerd and an agent each)")
	flag.IntVar(&o.layers, "layers", 4, "layers of the image")
	flag.IntVar(&o.layerSize, "layer-size", 16<<20, "bytes of each layer")
	flag.IntVar(&o.bandwidth, "bandwidth", 0, "bytes a second of the registry's one link, shared by every pull (0: unlimited)")
	flag.IntVar(&o.reps, "reps", 1, "repetitions of the phases")
	flag.IntVar(&o.maxServing, "max-serving", 0, "the peers block's max_serving (0: its default)")
	flag.StringVar(&o.logs, "logs", "", "keep each agent's log (JSON, debug) in this directory, as PHASE-REP-node-N.log")
	flag.DurationVar(&o.timeout, "timeout", 9*time.Minute, "stop everything after this long")
	flag.Parse()
	benchkit.Main("peers-bench", o.timeout, func(ctx context.Context) error { return run(ctx, o, os.Stdout) })
}

var progress = benchkit.Progress

// node is one node: its dockerd, its Nomad node ID, its agent's address.
type node struct {
	bed    *testbed.Bed
	id     string
	listen string
	dir    string
}

type env struct {
	o     options
	nodes []*node
	proxy *faultproxy.Proxy
	nomad *nomadtest.Server
	ref   string
	image int64 // bytes of the image's layers
	seq   int
}

// result is one phase's measurement.
type result struct {
	phase    string
	blobs    int64         // bytes of blobs the registry served
	gets     int           // blob GETs
	all      time.Duration // from the config change until every node has it
	each     []time.Duration
	fromPeer int
}

func run(ctx context.Context, o options, out io.Writer) error {
	start := time.Now()
	if o.logs != "" {
		if err := os.MkdirAll(o.logs, 0o755); err != nil {
			return err
		}
	}
	progress("starting %d dockerds and a registry", o.nodes)
	e := &env{o: o}
	beds := make([]*testbed.Bed, o.nodes)
	errs := make([]error, o.nodes)
	var wg sync.WaitGroup
	for i := range beds {
		wg.Go(func() { beds[i], errs[i] = testbed.Start() })
	}
	wg.Wait()
	for i, b := range beds {
		if b != nil {
			defer b.Close()
		}
		if errs[i] != nil {
			return errs[i]
		}
	}
	reg, err := beds[0].StartRegistry("peers", testbed.RegistryOptions{})
	if err != nil {
		return err
	}
	defer reg.Stop()
	if e.proxy, err = faultproxy.Start("http://" + reg.Addr); err != nil {
		return err
	}
	defer e.proxy.Close()
	if e.nomad, err = nomadtest.New(nomadtest.Options{}); err != nil {
		return err
	}
	e.nomad.Start()
	defer e.nomad.Close()
	var regs []nomadtest.Registration
	for i, b := range beds {
		n := &node{bed: b, id: fmt.Sprintf("%08x-bbbb-4000-8000-%012x", i+1, i+1), dir: filepath.Join(b.Dir, "agent")}
		if n.listen, err = testbed.UnusedAddr(); err != nil {
			return err
		}
		e.nomad.AddNode(map[string]any{"ID": n.id, "Name": fmt.Sprintf("node-%d", i+1), "Datacenter": "dc1", "Attributes": map[string]any{}})
		regs = append(regs, nomadtest.Registration{Service: "prefetch", NodeID: n.id, Address: n.listen})
		e.nodes = append(e.nodes, n)
	}
	e.nomad.SetRegistrations(regs...)

	progress("seeding an image of %d x %d MiB layers", o.layers, o.layerSize>>20)
	if _, err := testbed.SeedLayers(ctx, reg.Addr+"/app:1", "bench-peers", o.layers, o.layerSize); err != nil {
		return err
	}
	if err := beds[0].Remove(ctx, reg.Addr+"/app:1"); err != nil {
		return err
	}
	e.ref, e.image = e.proxy.Addr+"/app:1", int64(o.layers)*int64(o.layerSize)
	e.proxy.SetBandwidth(o.bandwidth)

	var results []result
	for rep := range o.reps {
		for _, phase := range strings.Split(o.phases, ",") {
			progress("rep %d: phase %s", rep+1, phase)
			r, err := e.phase(ctx, phase)
			if err != nil {
				return fmt.Errorf("phase %s: %w", phase, err)
			}
			progress("  every node has it after %.2f s (each: %s); the registry served %.1f MiB of blobs (%d GETs); %d node(s) copied it from a peer",
				r.all.Seconds(), seconds(r.each), float64(r.blobs)/(1<<20), r.gets, r.fromPeer)
			results = append(results, r)
		}
	}
	return report(out, e, results, time.Since(start))
}

// phase rolls the image out to every node, from daemons without it.
func (e *env) phase(ctx context.Context, phase string) (result, error) {
	r := result{phase: phase}
	peers := ""
	switch phase {
	case "plain":
	case "peers":
		peers = "  peers {\n    order = \"first\"\n"
		if e.o.maxServing > 0 {
			peers += fmt.Sprintf("    max_serving = %d\n", e.o.maxServing)
		}
		peers += "  }\n"
	default:
		return r, fmt.Errorf("unknown phase %q (plain, peers)", phase)
	}
	e.seq++
	var agents []*benchkit.Agent
	defer func() {
		for i, a := range agents {
			a.Stop()
			if e.o.logs != "" {
				keepLog(a.Log, filepath.Join(e.o.logs, fmt.Sprintf("%s-%d-node-%d.log", phase, e.seq, i+1)))
			}
		}
	}()
	var writes []func(images string) error
	for _, n := range e.nodes {
		if err := n.bed.Remove(ctx, e.ref); err != nil {
			return r, err
		}
		a, write, err := e.startAgent(ctx, n, peers)
		if err != nil {
			return r, err
		}
		agents, writes = append(agents, a), append(writes, write)
	}
	e.proxy.ResetCounts()
	t0 := time.Now()
	for _, w := range writes {
		if err := w(fmt.Sprintf("image \"app\" {\n  expected = %q\n}\n", e.ref)); err != nil {
			return r, err
		}
	}
	done := make([]bool, len(e.nodes))
	for !slices.Equal(done, slices.Repeat([]bool{true}, len(done))) {
		for i, a := range agents {
			if done[i] {
				continue
			}
			s, err := a.Status(ctx)
			if err != nil || len(s.Images) != 1 || s.Images[0].State != agent.StatePresent {
				continue
			}
			done[i] = true
			r.each = append(r.each, time.Since(t0))
			if strings.HasPrefix(s.Images[0].Source, agent.PeerSource) {
				r.fromPeer++
			}
		}
		select {
		case <-ctx.Done():
			return r, context.Cause(ctx)
		case <-time.After(50 * time.Millisecond):
		}
	}
	r.all = time.Since(t0)
	r.blobs, r.gets = e.proxy.BodyBytes("GET blob"), e.proxy.Count("GET blob")
	return r, nil
}

// startAgent runs prefetch run on n with no image yet and returns it and
// a writer of its config's image blocks.
func (e *env) startAgent(ctx context.Context, n *node, peers string) (*benchkit.Agent, func(string) error, error) {
	dir := filepath.Join(n.dir, fmt.Sprintf("run-%d", e.seq))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	idFile := filepath.Join(dir, "nomad_relay.jwt")
	ident := e.nomad.IssueIdentity(nomadtest.Identity{Name: "relay", Audience: []string{config.DefaultRelayAudience}, TTL: time.Hour})
	if err := os.WriteFile(idFile, []byte(ident), 0o600); err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dir, "config.hcl")
	write := func(images string) error {
		src := fmt.Sprintf("docker {\n  host = %q\n}\nallow_empty = true\nresync_interval = \"1h\"\n%s\nnomad {\n  address = %q\n  node_id = %q\n  infra_image = \"\"\n%s}\n",
			n.bed.Host, images, e.nomad.URL, n.id, strings.ReplaceAll(peers, "peers {", "peers {\n    identity_file = \""+idFile+"\""))
		if err := os.WriteFile(path+".new", []byte(src), 0o644); err != nil {
			return err
		}
		return os.Rename(path+".new", path)
	}
	if err := write(""); err != nil {
		return nil, nil, err
	}
	a, err := benchkit.StartAgent(ctx, dir, path, n.listen)
	if err != nil {
		return nil, nil, fmt.Errorf("node %s: %w", n.id, err)
	}
	return a, write, nil
}

// keepLog copies an agent's log to path, saying so on failure (the
// measurement stands without it).
func keepLog(from, path string) {
	b, err := os.ReadFile(from)
	if err == nil {
		err = os.WriteFile(path, b, 0o644)
	}
	if err != nil {
		progress("  keeping the log %s: %v", from, err)
	}
}

// seconds lists ds as "1.20 s, 2.31 s".
func seconds(ds []time.Duration) string {
	var b strings.Builder
	for i, d := range ds {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%.2f s", d.Seconds())
	}
	return b.String()
}

func report(out io.Writer, e *env, results []result, took time.Duration) error {
	link := "unlimited"
	if e.o.bandwidth > 0 {
		link = fmt.Sprintf("%.0f MB/s shared", float64(e.o.bandwidth)/1e6)
	}
	fmt.Fprintf(out, "%d nodes (a dockerd and an agent each, on this one machine), one image of %d x %d MiB layers rolled out to every node at once; the registry's link %s; %s in all.\n\n",
		len(e.nodes), e.o.layers, e.o.layerSize>>20, link, took.Round(time.Second))
	fmt.Fprintln(out, "| phase | registry blob bytes | × one copy | blob GETs | every node has it | copied from a peer |")
	fmt.Fprintln(out, "|---|---:|---:|---:|---:|---:|")
	for _, r := range results {
		fmt.Fprintf(out, "| %s | %.1f MiB | %.2f× | %d | %.2f s | %d of %d |\n", r.phase, float64(r.blobs)/(1<<20), float64(r.blobs)/float64(e.image), r.gets, r.all.Seconds(), r.fromPeer, len(e.nodes))
	}
	return nil
}
