package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/cluster"
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

// Images discovery leaves out over max_images are said, not hidden.
func TestStatusTableLeftOut(t *testing.T) {
	t.Parallel()
	now := time.Now()
	s := agent.Snapshot{Config: "c.hcl", ConfigLoaded: now, Nomad: &agent.DiscoveryStatus{
		Node: "vm", Listed: true, Live: true, Jobs: 40, Images: 5, MaxImages: 5, LeftOut: 37,
		LeftOutImages: []string{"reg:5000/flood-03:1 (used by default/flood-03/frontend/proxy): over nomad max_images (5)", "reg:5000/flood-04:1 (...)"},
	}}
	var b bytes.Buffer
	if err := writeStatusTable(&b, s, now); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"  37 image(s) left out, over max_images (5): the newest jobs' (prefetch status -json lists the first 2)\n",
		"  the next in line: reg:5000/flood-03:1 (used by default/flood-03/frontend/proxy): over nomad max_images (5)\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
}

// Yielding to Nomad's pulls is said, with why.
func TestStatusTableForeground(t *testing.T) {
	t.Parallel()
	now := time.Now()
	since := now.Add(-3 * time.Second)
	s := agent.Snapshot{Config: "c.hcl", ConfigLoaded: now, Foreground: &agent.ForegroundStatus{
		Yield: "cancel", BackgroundPulls: 1, Yielding: true, YieldingSince: &since, Why: "default/web/g/t waits for reg:5000/web:1", Live: true,
	}}
	var b bytes.Buffer
	if err := writeStatusTable(&b, s, now); err != nil {
		t.Fatal(err)
	}
	if want := "foreground: YIELDING for 3s (cancel), background pulls held back: default/web/g/t waits for reg:5000/web:1\n"; !strings.Contains(b.String(), want) {
		t.Errorf("status lacks %q:\n%s", want, b.String())
	}
}

// The matrix names the peer an image was copied from, in its cell.
func TestMatrixCellNamesPeer(t *testing.T) {
	m := cluster.Matrix{
		Images: []cluster.Image{{Name: "app", Expected: "reg:5000/app:1"}},
		Nodes: []cluster.Node{
			{Agent: cluster.Agent{Node: "n1"}, Ready: true, Images: map[string]cluster.Cell{"reg:5000/app:1": cluster.CellPresent}},
			{Agent: cluster.Agent{Node: "n2"}, Ready: true, Images: map[string]cluster.Cell{"reg:5000/app:1": cluster.CellPresent}, FromPeers: map[string]string{"reg:5000/app:1": "0a1b2c3d"}},
		},
	}
	var b strings.Builder
	if err := writeMatrix(&b, "the catalog", m, false); err != nil {
		t.Fatal(err)
	}
	row := strings.Split(b.String(), "\n")[3]
	if !strings.Contains(row, "present  present (peer 0a1b2c3d)") {
		t.Errorf("the image's row: %q, want n1 present and n2 present (peer 0a1b2c3d)\n%s", row, b.String())
	}
}
