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
