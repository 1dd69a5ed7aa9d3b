package nomad

import (
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	t.Parallel()
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second, Jitter: 0.5}
	tests := []struct {
		attempt int
		rnd     float64
		want    time.Duration
	}{
		{0, 0, 100 * time.Millisecond},
		{1, 0, 100 * time.Millisecond},
		{2, 0, 200 * time.Millisecond},
		{3, 0, 400 * time.Millisecond},
		{4, 0, 800 * time.Millisecond},
		{5, 0, time.Second},
		{1000, 0, time.Second},
		{1, 0.5, 75 * time.Millisecond},
		{5, 0.999999, 500*time.Millisecond + 500*time.Nanosecond},
	}
	for _, tt := range tests {
		if got := b.Delay(tt.attempt, tt.rnd); got != tt.want {
			t.Errorf("Delay(%d, %v): got %v, want %v", tt.attempt, tt.rnd, got, tt.want)
		}
	}
	if got := (Backoff{}).Delay(3, 0.3); got != 0 {
		t.Errorf("zero Backoff: got %v, want 0", got)
	}
}
