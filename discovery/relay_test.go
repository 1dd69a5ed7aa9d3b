package discovery

import (
	"testing"
	"time"
)

// The wait before following Nomad is fallback_after and up to a quarter
// more, drawn each time: agents that lost the relay together spread out.
func TestFallbackWaitSpread(t *testing.T) {
	t.Parallel()
	rl := &relayLink{fallback: time.Minute}
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := rl.fallbackWait()
		if d < time.Minute || d > time.Minute+15*time.Second {
			t.Fatalf("got %s, want 1m to 1m15s", d)
		}
		seen[d.Truncate(time.Second)] = true
	}
	if len(seen) < 10 {
		t.Errorf("1000 draws fell in %d seconds of the 15, want them spread", len(seen))
	}
}
