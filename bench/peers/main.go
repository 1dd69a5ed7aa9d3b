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
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/daemon"
	"github.com/nomad-prefetch/nomad-prefetch/internal/faultproxy"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
)

type options struct {
	phases    string
	nodes     int
	layers    int
	layerSize int
	bandwidth int
	reps      int
	timeout   time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.phases, "run", "plain,peers", "phases, comma-separated, run in this order each repetition")
	flag.IntVar(&o.nodes, "nodes", 4, "nodes (a dockerd and an agent each)")
	flag.IntVar(&o.layers, "layers", 4, "layers of the image")
	flag.IntVar(&o.layerSize, "layer-size", 16<<20, "bytes of each layer")
	flag.IntVar(&o.bandwidth, "bandwidth", 0, "bytes a second of the registry's one link, shared by every pull (0: unlimited)")
	flag.IntVar(&o.reps, "reps", 1, "repetitions of the phases")
	flag.DurationVar(&o.timeout, "timeout", 9*time.Minute, "stop everything after this long")
	flag.Parse()
	if why := testbed.Missing(); why != "" {
		fmt.Fprintln(os.Stderr, "peers-bench:", why)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel := context.WithTimeoutCause(ctx, o.timeout, fmt.Errorf("-timeout %s reached", o.timeout))
	err := run(ctx, o, os.Stdout)
	cancel()
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "peers-bench:", err)
		os.Exit(1)
	}
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

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
	fromPeer int
}

func run(ctx context.Context, o options, out io.Writer) error {
	start := time.Now()
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
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		n.listen = ln.Addr().String()
		ln.Close()
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
			progress("  every node has it after %.2f s; the registry served %.1f MiB of blobs (%d GETs); %d node(s) copied it from a peer",
				r.all.Seconds(), float64(r.blobs)/(1<<20), r.gets, r.fromPeer)
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
		peers = `  peers {
    order = "first"
  }
`
	default:
		return r, fmt.Errorf("unknown phase %q (plain, peers)", phase)
	}
	e.seq++
	var stops []func()
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	var statuses []func(context.Context) (agent.Snapshot, error)
	var writes []func(images string) error
	for _, n := range e.nodes {
		if err := n.bed.Remove(ctx, e.ref); err != nil {
			return r, err
		}
		status, write, stop, err := e.startAgent(ctx, n, peers)
		if err != nil {
			return r, err
		}
		stops, statuses, writes = append(stops, stop), append(statuses, status), append(writes, write)
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
		for i, status := range statuses {
			if done[i] {
				continue
			}
			s, err := status(ctx)
			if err != nil || len(s.Images) != 1 || s.Images[0].State != agent.StatePresent {
				continue
			}
			done[i] = true
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

// startAgent runs prefetch run on n with no image yet and returns a reader
// of its /v1/status, a writer of its config's image blocks, and a stop
// function that waits for it.
func (e *env) startAgent(ctx context.Context, n *node, peers string) (func(context.Context) (agent.Snapshot, error), func(string) error, func(), error) {
	dir := filepath.Join(n.dir, fmt.Sprintf("run-%d", e.seq))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, nil, err
	}
	idFile := filepath.Join(dir, "nomad_relay.jwt")
	ident := e.nomad.IssueIdentity(nomadtest.Identity{Name: "relay", Audience: []string{config.DefaultRelayAudience}, TTL: time.Hour})
	if err := os.WriteFile(idFile, []byte(ident), 0o600); err != nil {
		return nil, nil, nil, err
	}
	path := filepath.Join(dir, "config.hcl")
	write := func(images string) error {
		src := fmt.Sprintf("docker {\n  host = %q\n}\nallow_empty = true\nresync_interval = \"1h\"\n%s\nnomad {\n  address = %q\n  node_id = %q\n  infra_image = \"\"\n%s}\n",
			n.bed.Host, images, e.nomad.URL, n.id, strings.ReplaceAll(peers, "peers {", "peers {\n    identity_file = \""+idFile+"\"\n    spool_dir = \""+dir+"\""))
		if err := os.WriteFile(path+".new", []byte(src), 0o644); err != nil {
			return err
		}
		return os.Rename(path+".new", path)
	}
	if err := write(""); err != nil {
		return nil, nil, nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "prefetch.log"))
	if err != nil {
		return nil, nil, nil, err
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(actx, daemon.Options{ConfigPath: path, Listen: n.listen, LockFile: filepath.Join(dir, "lock"),
			Log: slog.New(slog.NewJSONHandler(logf, &slog.HandlerOptions{Level: slog.LevelDebug})), Version: "bench"})
	}()
	status := func(ctx context.Context) (agent.Snapshot, error) {
		var s agent.Snapshot
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		defer rcancel()
		req, err := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+n.listen+"/v1/status", nil)
		if err != nil {
			return s, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return s, err
		}
		defer resp.Body.Close()
		return s, json.NewDecoder(resp.Body).Decode(&s)
	}
	// Up once it answers.
	for {
		if _, err := status(ctx); err == nil {
			break
		}
		select {
		case err := <-done:
			cancel()
			logf.Close()
			return nil, nil, nil, fmt.Errorf("the agent on %s stopped: %v (log %s)", n.id, err, logf.Name())
		case <-ctx.Done():
			cancel()
			logf.Close()
			return nil, nil, nil, context.Cause(ctx)
		case <-time.After(50 * time.Millisecond):
		}
	}
	stop := func() {
		cancel()
		<-done
		logf.Close()
	}
	return status, write, stop, nil
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
