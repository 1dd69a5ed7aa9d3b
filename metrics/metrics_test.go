package metrics

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
)

func TestMetrics(t *testing.T) {
	t.Parallel()
	snap := agent.Snapshot{Images: []agent.ImageStatus{
		{Name: "a", State: agent.StatePresent}, {Name: "b", State: agent.StatePresent}, {Name: "c", State: agent.StateFailed},
	}}
	m := New(func() agent.Snapshot { return snap })
	var obs agent.Observer = m
	obs.Fetched("retagged", "source", 2*time.Second)
	obs.Fetched("failed", "none", time.Second)
	obs.Reloaded("ok", time.Unix(1700000000, 0))
	obs.Reloaded("failed", time.Unix(1700000100, 0))
	obs.ImageRemoved()
	obs.DockerUp(false)
	m.PeerBytes("served", 1000)
	for _, e := range []string{"save", "whole", "whole", "failed"} { // two peers shared a save, one was cut off
		m.PeerServe(e)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`prefetch_images{state="present"} 2`,
		`prefetch_images{state="failed"} 1`,
		`prefetch_images{state="pulling"} 0`,
		`prefetch_images{state="wanted"} 0`,
		`prefetch_pulls_total{from="source",result="retagged"} 1`,
		`prefetch_pulls_total{from="none",result="failed"} 1`,
		`prefetch_pull_duration_seconds_count{result="retagged"} 1`,
		`prefetch_config_reloads_total{result="ok"} 1`,
		`prefetch_config_reloads_total{result="failed"} 1`,
		`prefetch_config_last_success_timestamp_seconds 1.7e+09`,
		`prefetch_docker_image_removals_total 1`,
		`prefetch_docker_up 0`,
		`prefetch_peer_bytes_total{direction="served"} 1000`,
		`prefetch_peer_bytes_total{direction="taken"} 0`,
		`prefetch_peer_saves_total 1`,
		`prefetch_peer_served_total{result="whole"} 2`,
		`prefetch_peer_served_total{result="failed"} 1`,
		`go_goroutines `,
		`process_cpu_seconds_total `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	obs.DockerUp(true)
	rec = httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), "prefetch_docker_up 1") {
		t.Error("prefetch_docker_up: want 1 after DockerUp(true)")
	}
}
