package status

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/metrics"
)

// sample is an agent's snapshot with one image present and one failed.
func sample(now time.Time) agent.Snapshot {
	next := now.Add(time.Minute)
	return agent.Snapshot{
		Config: "c.hcl", ConfigLoaded: now, ConfigError: "c.hcl:1:1: broken",
		Images: []agent.ImageStatus{
			{Name: "web", Expected: "reg:5000/web:2", State: agent.StatePresent, ImageID: "sha256:feed"},
			{Name: "db", Expected: "reg:5000/db:16", State: agent.StateFailed, Attempts: 1, NextRetry: &next},
		},
	}
}

func TestHandler(t *testing.T) {
	t.Parallel()
	now := time.Now()
	var snap atomic.Pointer[agent.Snapshot]
	first := sample(now)
	snap.Store(&first)
	var alive atomic.Bool
	alive.Store(true)
	current := func() agent.Snapshot { return *snap.Load() }
	m := metrics.New(current)
	m.Fetched("retagged", "source", 2*time.Second)
	m.Reloaded("ok", now)
	m.Reloaded("failed", now)
	srv := httptest.NewServer(Endpoints{Snapshot: current, Alive: alive.Load, Metrics: m.Handler()}.Local())
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "db reg:5000/db:16 failed") || strings.Contains(body, "web") {
		t.Errorf("/readyz: got %d %q, want 503 listing only db", code, body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: got %d, want 200", code)
	}
	alive.Store(false)
	if code, _ := get("/healthz"); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz with the loop stuck: got %d, want 503", code)
	}
	_, metrics := get("/metrics")
	for _, want := range []string{
		`prefetch_images{state="failed"} 1`,
		`prefetch_images{state="present"} 1`,
		`prefetch_images{state="wanted"} 0`,
		`prefetch_pulls_total{from="source",result="retagged"} 1`,
		`prefetch_pull_duration_seconds_count{result="retagged"} 1`,
		`prefetch_config_reloads_total{result="failed"} 1`,
		`prefetch_config_last_success_timestamp_seconds `,
		`go_goroutines `,
		`process_cpu_seconds_total `,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	got, err := Fetch(context.Background(), strings.TrimPrefix(srv.URL, "http://"), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Images) != 2 || got.Images[1].NextRetry == nil || got.ConfigError != first.ConfigError {
		t.Errorf("Fetch: got %+v", got)
	}
	ready := sample(now)
	ready.Images = ready.Images[:1]
	snap.Store(&ready)
	if code, _ := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz with every image present: got %d, want 200", code)
	}
}

func TestFetchErrors(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	if _, err := Fetch(context.Background(), srv.URL, ""); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("got %v, want an error with the status", err)
	}
	srv.Close()
	if _, err := Fetch(context.Background(), srv.URL, ""); err == nil || !strings.Contains(err.Error(), "asking the agent") {
		t.Errorf("got %v, want a connection error", err)
	}
}
