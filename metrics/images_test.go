package metrics

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
)

func TestImageMetrics(t *testing.T) {
	t.Parallel()
	since := time.Unix(1700000000, 0)
	snap := agent.Snapshot{ConfigLoaded: time.Now(), ConfigError: "c.hcl:1:1: broken", Images: []agent.ImageStatus{
		{Name: "a", Expected: "reg:5000/a:1", State: agent.StatePresent, ImageID: "sha256:a"},
		{Name: "b", Expected: "reg:5000/b:1", State: agent.StateFailed, FailingSince: &since},
		// A refresh in flight: still present; a retry in flight: still failing.
		{Name: "c", Expected: "reg:5000/c:1", State: agent.StatePulling, ImageID: "sha256:c"},
		{Name: "d", Expected: "reg:5000/d:1", State: agent.StatePulling, FailingSince: &since},
	}}
	m := New(func() agent.Snapshot { return snap })
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`prefetch_image_state{expected="reg:5000/a:1",image="a",state="present"} 1`,
		`prefetch_image_state{expected="reg:5000/b:1",image="b",state="failed"} 1`,
		`prefetch_image_state{expected="reg:5000/c:1",image="c",state="pulling"} 1`,
		`prefetch_image_present{expected="reg:5000/a:1",image="a"} 1`,
		`prefetch_image_present{expected="reg:5000/b:1",image="b"} 0`,
		`prefetch_image_present{expected="reg:5000/c:1",image="c"} 1`,
		`prefetch_image_present{expected="reg:5000/d:1",image="d"} 0`,
		`prefetch_image_failing_since_timestamp_seconds{expected="reg:5000/b:1",image="b"} 1.7e+09`,
		`prefetch_image_failing_since_timestamp_seconds{expected="reg:5000/d:1",image="d"} 1.7e+09`,
		"prefetch_config_error 1",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, not := range []string{`prefetch_image_failing_since_timestamp_seconds{expected="reg:5000/a:1"`, `image="a",state="failed"`} {
		if strings.Contains(body, not) {
			t.Errorf("/metrics has %s", not)
		}
	}
	snap.ConfigError = ""
	rec = httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), "prefetch_config_error 0") {
		t.Error("prefetch_config_error: want 0 once the config loads")
	}
}

// With discovery, the limit and what it leaves out are counted, not
// labelled: only kept images have series of their own.
func TestDiscoveryMetrics(t *testing.T) {
	t.Parallel()
	snap := agent.Snapshot{ConfigLoaded: time.Now(),
		Nomad: &agent.DiscoveryStatus{Listed: true, Live: true, Images: 1, MaxImages: 1, LeftOut: 2, LeftOutImages: []string{
			"reg:5000/flood-1:1 (used by default/flood-1/g/t): over nomad max_images (1)",
			"reg:5000/flood-2:1 (used by default/flood-2/g/t): over nomad max_images (1)",
		}},
		Images: []agent.ImageStatus{{Name: "default/web/g/t", Expected: "reg:5000/web:1", State: agent.StatePresent, ImageID: "sha256:w", Origin: agent.OriginNomad}},
	}
	m := New(func() agent.Snapshot { return snap })
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{"prefetch_discovered_images 1", "prefetch_discovered_images_max 1", "prefetch_discovered_images_left_out 2"} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(body, "flood") {
		t.Error("/metrics has a series for an image left out")
	}
}

// With a nomad block, yielding to Nomad's pulls is visible: whether, for
// how many images, how often and what it cancelled.
func TestForegroundMetrics(t *testing.T) {
	t.Parallel()
	snap := agent.Snapshot{ConfigLoaded: time.Now()}
	m := New(func() agent.Snapshot { return snap })
	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	if body := scrape(); strings.Contains(body, "prefetch_yielding") {
		t.Error("prefetch_yielding without a nomad block")
	}
	snap.Foreground = &agent.ForegroundStatus{Yield: "cancel", Yielding: true, Waiting: []string{"reg:5000/fg:1"}, Episodes: 3, Cancelled: 2, Live: true}
	body := scrape()
	for _, want := range []string{"prefetch_yielding 1", "prefetch_yield_waiting_images 1", "prefetch_yield_episodes_total 3", "prefetch_yield_cancelled_pulls_total 2", "prefetch_node_allocations_up 1"} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
