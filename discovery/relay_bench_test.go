package discovery

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
)

// BenchmarkRelay: n discoverers follow the fake Nomad, directly or through
// the relay they elect, in one run; each iteration registers a new image
// of a job and waits until every discoverer reported it. Metrics: what
// Nomad served per update (stream bytes, frames and heartbeats, all
// subscriptions), Nomad's open subscriptions, and the time from the
// registration to each discoverer's report, p50 and p95 over every
// discoverer and update (the agent's loop sends the first registry
// request right after the report).
//
//	go test -run '^$' -bench BenchmarkRelay -benchtime 20x ./discovery/
func BenchmarkRelay(b *testing.B) {
	for _, n := range []int{50} {
		for _, relayed := range []bool{false, true} {
			name := fmt.Sprintf("direct/agents=%d", n)
			if relayed {
				name = fmt.Sprintf("relayed/agents=%d", n)
			}
			b.Run(name, func(b *testing.B) { benchRelay(b, n, relayed) })
		}
	}
}

// watcher is one discoverer's reports, and when each image first came.
type watcher struct {
	mu    sync.Mutex
	seen  map[string]time.Time
	ch    chan struct{}
	relay *agent.RelayStatus
}

func (w *watcher) found(d agent.Discovered) {
	now := time.Now()
	w.mu.Lock()
	for _, img := range d.Images {
		if _, ok := w.seen[img.Expected]; !ok {
			w.seen[img.Expected] = now
		}
	}
	w.relay = d.Status.Relay
	w.mu.Unlock()
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

func (w *watcher) wait(b *testing.B, ok func() bool) {
	for {
		w.mu.Lock()
		done := ok()
		w.mu.Unlock()
		if done {
			return
		}
		select {
		case <-w.ch:
		case <-time.After(time.Minute):
			b.Fatal("a discoverer reported nothing for a minute")
		}
	}
}

func benchRelay(b *testing.B, n int, relayed bool) {
	srv, err := nomadtest.New(nomadtest.Options{MinLockTTL: time.Second, DefaultLockTTL: time.Second, DefaultLockDelay: time.Second, ManagementToken: "management"})
	if err != nil {
		b.Fatal(err)
	}
	srv.Start()
	defer srv.Close()
	var node map[string]any
	fixture(b, "node.json", &node)
	srv.SetNode(node)
	job := func(image string) map[string]any { return webJob(b, "web", image) }
	srv.RegisterJob(job("reg:5000/app:0"))

	dir := b.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	ws := make([]*watcher, n)
	off := ""
	for i := range n {
		w := &watcher{seen: map[string]time.Time{}, ch: make(chan struct{}, 1)}
		ws[i] = w
		d := &Discoverer{Retry: fastRetry}
		settings := config.Nomad{Address: srv.URL, Namespaces: []string{"*"}, InfraImage: &off, MaxImages: 100}
		if relayed {
			l := httptest.NewServer(d.Relay())
			defer l.Close()
			d.Advertise = strings.TrimPrefix(l.URL, "http://")
			idFile := filepath.Join(dir, fmt.Sprintf("relay-%d.jwt", i))
			tok := srv.IssueIdentity(nomadtest.Identity{Name: "relay", Audience: []string{config.DefaultRelayAudience}, TTL: time.Hour})
			if err := os.WriteFile(idFile, []byte(tok), 0o600); err != nil {
				b.Fatal(err)
			}
			settings.Relay = &config.Relay{LockPath: config.DefaultRelayLockPath, Audience: config.DefaultRelayAudience,
				IdentityFile: idFile, HistoryBytes: config.DefaultRelayHistoryBytes, MaxSubscribers: config.DefaultRelayMaxSubscribers,
				FallbackAfter: config.DefaultRelayFallbackAfter, LockTTL: time.Second}
		}
		wg.Go(func() { d.Run(ctx, settings, w.found) })
	}
	for _, w := range ws {
		w.wait(b, func() bool {
			_, ok := w.seen["reg:5000/app:0"]
			return ok && (!relayed || w.relay != nil && w.relay.Source == agent.SourceRelay)
		})
	}
	var lat []time.Duration
	before := srv.StreamBytes()
	updates := 0
	b.ResetTimer()
	for b.Loop() {
		updates++
		ref := fmt.Sprintf("reg:5000/app:%d", updates)
		start := time.Now()
		srv.RegisterJob(job(ref))
		for _, w := range ws {
			w.wait(b, func() bool { _, ok := w.seen[ref]; return ok })
			w.mu.Lock()
			lat = append(lat, w.seen[ref].Sub(start))
			w.mu.Unlock()
		}
	}
	b.StopTimer()
	subs := srv.Conns() // settled: every discoverer subscribed by now
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(srv.StreamBytes()-before)/float64(updates), "nomad-bytes/update")
	b.ReportMetric(float64(subs), "nomad-subscriptions")
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.95), "p95-ms")
}
