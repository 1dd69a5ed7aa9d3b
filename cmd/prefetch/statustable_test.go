package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
)

func sampleSnapshot(now time.Time) agent.Snapshot {
	next := now.Add(40 * time.Second)
	return agent.Snapshot{
		Config:       "/local/config.hcl",
		ConfigLoaded: now.Add(-90 * time.Second),
		ConfigError:  "/local/config.hcl:3:14: Invalid expression",
		Images: []agent.ImageStatus{
			{Name: "traefik", Expected: "reg:5000/traefik:v3", State: agent.StatePresent, ImageID: "sha256:0123456789abcdef0123", Source: "docker.io/library/traefik:v3"},
			{Name: "minio", Expected: "reg:5000/minio:1", State: agent.StateFailed, Attempts: 3, LastError: "expected: refused\nsource x: unauthorized", NextRetry: &next},
		},
	}
}

func TestStatusTable(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	if err := writeStatusTable(&b, sampleSnapshot(now), now); err != nil {
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
func TestStatusTableShortIDAndDocker(t *testing.T) {
	t.Parallel()
	now := time.Now()
	since := now.Add(-time.Minute)
	s := agent.Snapshot{Config: "c.hcl", ConfigLoaded: now, DockerError: "the Docker daemon at unix:///x.sock did not answer a ping within 30s", DockerDownSince: &since,
		Images: []agent.ImageStatus{{Name: "a", Expected: "r/a:1", State: agent.StatePresent, ImageID: "sha256:abc"}}}
	var b bytes.Buffer
	if err := writeStatusTable(&b, s, now); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "NOT READY: Docker unreachable since") || !strings.Contains(b.String(), "  abc  ") {
		t.Errorf("got:\n%s", b.String())
	}
	if ok, why := s.Ready(); ok || !strings.Contains(why, "did not answer a ping") {
		t.Errorf("Ready: got %v %q", ok, why)
	}
}
