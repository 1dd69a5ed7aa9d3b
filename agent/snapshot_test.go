package agent

import (
	"strings"
	"testing"
	"time"
)

// Before the agent has applied its first config it has nothing to vouch
// for: not ready.
func TestNotReadyBeforeConfig(t *testing.T) {
	t.Parallel()
	if ok, why := (Snapshot{}).Ready(); ok || !strings.Contains(why, "starting") {
		t.Errorf("empty snapshot: got ready %v, %q; want not ready, starting", ok, why)
	}
}

func TestReadyWhenDockerUnreachable(t *testing.T) {
	t.Parallel()
	since := time.Now().Add(-time.Minute)
	s := Snapshot{ConfigLoaded: time.Now(), DockerError: "the Docker daemon at unix:///x.sock did not answer a ping within 30s", DockerDownSince: &since,
		Images: []ImageStatus{{Name: "a", Expected: "r/a:1", State: StatePresent, ImageID: "sha256:abc"}}}
	if ok, why := s.Ready(); ok || !strings.Contains(why, "Docker unreachable since") || !strings.Contains(why, "did not answer a ping") {
		t.Errorf("Ready: got %v %q", ok, why)
	}
}

// A discovered image that can't be fetched does not hold readiness unless
// the nomad block's hold_readiness says so; one not tried yet does, and a
// config image always does.
func TestReadyDiscoveredImages(t *testing.T) {
	t.Parallel()
	present := ImageStatus{Name: "a", Expected: "r/a:1", State: StatePresent, ImageID: "sha256:abc", Origin: OriginConfig}
	failed := ImageStatus{Name: "ns/j/g/t", Expected: "r/flood:1", State: StateFailed, Attempts: 2, Origin: OriginNomad, LastError: "manifest unknown"}
	retrying := failed
	retrying.State = StatePulling // a retry in flight: it failed before
	pending := ImageStatus{Name: "ns/j/g/t2", Expected: "r/new:1", State: StatePulling, Origin: OriginNomad}
	cfgFailed := ImageStatus{Name: "b", Expected: "r/b:1", State: StateFailed, Attempts: 1, Origin: OriginConfig}
	for _, tc := range []struct {
		name   string
		images []ImageStatus
		hold   bool
		ready  bool
		why    string
	}{
		{"failed discovered", []ImageStatus{present, failed}, false, true, "but 1 discovered image(s) that can't be fetched"},
		{"retrying discovered", []ImageStatus{present, retrying}, false, true, "but 1 discovered image(s)"},
		{"failed discovered, hold_readiness", []ImageStatus{present, failed}, true, false, "1 image(s) missing"},
		{"first fetch of a discovered image", []ImageStatus{present, pending, failed}, false, false, "1 image(s) missing"},
		{"failed config image", []ImageStatus{cfgFailed, failed}, false, false, "1 image(s) missing"},
		{"all present", []ImageStatus{present}, false, true, "every image is present"},
	} {
		s := Snapshot{ConfigLoaded: time.Now(), Images: tc.images, Nomad: &DiscoveryStatus{Listed: true, HoldReadiness: tc.hold}}
		ok, why := s.Ready()
		if ok != tc.ready || !strings.Contains(why, tc.why) {
			t.Errorf("%s: got %v %q, want %v %q", tc.name, ok, why, tc.ready, tc.why)
		}
	}
}
