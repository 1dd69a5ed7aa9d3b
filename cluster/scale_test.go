package cluster

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/internal/catalogtest"
)

// fleet is n fake agents: one HTTP server on n loopback listeners (n file
// descriptors, not n servers' worth), each answering the snapshot of its
// index. Agent i lacks image b when i%7 == 0 (failed), and is stalled when
// i%100 == 99.
type fleet struct {
	addrs []string
	ports map[int]int // port -> index
	srv   *http.Server
}

const fleetStalls = 5 // of 500: 99, 199, ..., 499

func startFleet(tb testing.TB, n int) *fleet {
	tb.Helper()
	f := &fleet{ports: map[int]int{}}
	f.srv = &http.Server{Handler: http.HandlerFunc(f.serve), ReadHeaderTimeout: 10 * time.Second}
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("listener %d: %v", i, err)
		}
		f.ports[ln.Addr().(*net.TCPAddr).Port] = i
		f.addrs = append(f.addrs, ln.Addr().String())
		go func() { _ = f.srv.Serve(ln) }()
	}
	tb.Cleanup(func() { _ = f.srv.Close() })
	return f
}

func (f *fleet) serve(w http.ResponseWriter, r *http.Request) {
	_, port, _ := net.SplitHostPort(r.Context().Value(http.LocalAddrContextKey).(net.Addr).String())
	p, _ := strconv.Atoi(port)
	i := f.ports[p]
	if i%100 == 99 {
		<-r.Context().Done()
		return
	}
	s := snap(present("a", refA), present("b", refB))
	if i%7 == 0 {
		s.Images[1] = failed("b", refB, "pull refused")
	}
	_ = json.NewEncoder(w).Encode(s)
}

// 500 agents through a fake Nomad catalog: every one is in the matrix, with
// the right cells, the stalled ones as unreachable.
func TestScale500(t *testing.T) {
	t.Parallel()
	const n = 500
	f := startFleet(t, n)
	c := startCatalog(t, catalogtest.Nomad, "", f.addrs...)
	agents, err := catalogOf(t, c, "").Agents(context.Background())
	if err != nil || len(agents) != n {
		t.Fatalf("catalog: got %d agents, %v; want %d", len(agents), err, n)
	}
	m := NewMatrix(Ask(context.Background(), agents, AskOptions{Timeout: 2 * time.Second}))
	index := map[string]int{}
	for i, a := range f.addrs {
		index[a] = i
	}
	counts := map[Cell]int{}
	for _, node := range m.Nodes {
		i := index[node.Address]
		wantB := CellPresent
		switch {
		case i%100 == 99:
			wantB = CellUnreachable
		case i%7 == 0:
			wantB = CellFailed
		}
		if got := node.Images[refB]; got != wantB {
			t.Errorf("agent %d: b is %s, want %s (%s)", i, got, wantB, node.Error)
		}
		counts[node.Images[refB]]++
	}
	wantFailed := 0
	for i := range n {
		if i%7 == 0 && i%100 != 99 {
			wantFailed++
		}
	}
	if counts[CellUnreachable] != fleetStalls || counts[CellFailed] != wantFailed || counts[CellPresent] != n-fleetStalls-wantFailed {
		t.Errorf("cells of b: got %v, want %d unreachable, %d failed, the rest present", counts, fleetStalls, wantFailed)
	}
	if len(m.Nodes) != n || m.Complete() {
		t.Errorf("got %d columns, complete %v; want %d, not complete", len(m.Nodes), m.Complete(), n)
	}
}

// BenchmarkCluster500 is one `prefetch status -cluster` round over 500
// agents: the catalog, then every agent, DefaultParallel at a time, the
// default per-agent timeout; none stalls (stalls cost their timeout, which
// TestScale500 covers).
func BenchmarkCluster500(b *testing.B) {
	const n = 500
	f := startFleet(b, n)
	var addrs []string
	for i, a := range f.addrs {
		if i%100 != 99 {
			addrs = append(addrs, a)
		}
	}
	c := catalogtest.Start(catalogtest.Nomad, "prefetch", "")
	b.Cleanup(c.Close)
	c.SetAgents(addrs...)
	cat, err := NewCatalog(CatalogOptions{Provider: ProviderNomad, Service: "prefetch", Nomad: nomadConfig(c.URL)})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		agents, err := cat.Agents(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		m := NewMatrix(Ask(context.Background(), agents, AskOptions{}))
		if len(m.Nodes) != len(addrs) {
			b.Fatalf("%d nodes", len(m.Nodes))
		}
		for _, node := range m.Nodes {
			if !node.Answered() {
				b.Fatal(node.Error)
			}
		}
	}
}
