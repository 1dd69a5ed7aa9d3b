package eventlog

import (
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

func TestHealth(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		snap nomad.StatsSnapshot
		code int
	}{
		{"live", nomad.StatsSnapshot{Live: true}, 200},
		{"connecting", nomad.StatsSnapshot{}, 200},
		{"blip", nomad.StatsSnapshot{DownSince: now.Add(-5 * time.Second)}, 200},
		{"outage", nomad.StatsSnapshot{DownSince: now.Add(-time.Minute)}, 503},
		{"refused", nomad.StatsSnapshot{Refused: true, DownSince: now.Add(-time.Second)}, 503},
	}
	for _, tt := range tests {
		if code, msg := health(tt.snap, now, 30*time.Second); code != tt.code {
			t.Errorf("%s: got %d %q, want %d", tt.name, code, msg, tt.code)
		}
	}
}
