package status

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func sample(now time.Time) Snapshot {
	next := now.Add(40 * time.Second)
	return Snapshot{
		Config:       "/local/config.hcl",
		ConfigLoaded: now.Add(-90 * time.Second),
		ConfigError:  "/local/config.hcl:3:14: Invalid expression",
		Images: []Image{
			{Name: "traefik", Expected: "reg:5000/traefik:v3", State: Present, ImageID: "sha256:0123456789abcdef0123", Source: "docker.io/library/traefik:v3"},
			{Name: "minio", Expected: "reg:5000/minio:1", State: Failed, Attempts: 3, LastError: "expected: refused\nsource x: unauthorized", NextRetry: &next},
		},
	}
}

func TestHandler(t *testing.T) {
	t.Parallel()
	now := time.Now()
	var snap atomic.Pointer[Snapshot]
	first := sample(now)
	snap.Store(&first)
	var alive atomic.Bool
	alive.Store(true)
	current := func() Snapshot { return *snap.Load() }
	m := NewMetrics(current)
	m.Fetched("retagged", "source", 2*time.Second)
	m.Reloaded("ok", now)
	m.Reloaded("failed", now)
	srv := httptest.NewServer(Handler(current, alive.Load, m))
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

	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "minio reg:5000/minio:1 failed") || strings.Contains(body, "traefik") {
		t.Errorf("/readyz: got %d %q, want 503 listing only minio", code, body)
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

	got, err := Fetch(context.Background(), strings.TrimPrefix(srv.URL, "http://"))
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
	if _, err := Fetch(context.Background(), srv.URL); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("got %v, want an error with the status", err)
	}
	srv.Close()
	if _, err := Fetch(context.Background(), srv.URL); err == nil || !strings.Contains(err.Error(), "asking the agent") {
		t.Errorf("got %v, want a connection error", err)
	}
}

func TestWriteTable(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	if err := WriteTable(&b, sample(now), now); err != nil {
		t.Fatal(err)
	}
	want := `config /local/config.hcl, loaded 1m30s ago
the file on disk is not in use:
  /local/config.hcl:3:14: Invalid expression

IMAGE    STATE    EXPECTED             FROM                          IMAGE ID      ATTEMPTS  NEXT RETRY
traefik  present  reg:5000/traefik:v3  docker.io/library/traefik:v3  0123456789ab  0         -
minio    failed   reg:5000/minio:1     -                             -             3         in 40s

minio: expected: refused
  source x: unauthorized
`
	if got := b.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// An image ID shorter than the 12 characters the table shows is shown whole,
// and a snapshot with Docker unreachable says so first.
func TestWriteTableShortIDAndDocker(t *testing.T) {
	t.Parallel()
	now := time.Now()
	since := now.Add(-time.Minute)
	s := Snapshot{Config: "c.hcl", ConfigLoaded: now, DockerError: "the Docker daemon at unix:///x.sock did not answer a ping within 30s", DockerDownSince: &since,
		Images: []Image{{Name: "a", Expected: "r/a:1", State: Present, ImageID: "sha256:abc"}}}
	var b bytes.Buffer
	if err := WriteTable(&b, s, now); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "NOT READY: Docker unreachable since") || !strings.Contains(b.String(), "  abc  ") {
		t.Errorf("got:\n%s", b.String())
	}
	if ok, why := s.Ready(); ok || !strings.Contains(why, "did not answer a ping") {
		t.Errorf("Ready: got %v %q", ok, why)
	}
}

// Before the agent has applied its first config it has nothing to vouch
// for: not ready.
func TestNotReadyBeforeConfig(t *testing.T) {
	t.Parallel()
	if ok, why := (Snapshot{}).Ready(); ok || !strings.Contains(why, "starting") {
		t.Errorf("empty snapshot: got ready %v, %q; want not ready, starting", ok, why)
	}
}
