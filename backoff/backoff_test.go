package backoff

import (
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		p       Policy
		attempt int
		rnd     float64
		want    time.Duration
	}{
		// eventlog's shape: jitter up to half.
		{Policy{100 * time.Millisecond, time.Second, 0.5}, 0, 0, 100 * time.Millisecond},
		{Policy{100 * time.Millisecond, time.Second, 0.5}, 1, 0, 100 * time.Millisecond},
		{Policy{100 * time.Millisecond, time.Second, 0.5}, 2, 0, 200 * time.Millisecond},
		{Policy{100 * time.Millisecond, time.Second, 0.5}, 3, 0, 400 * time.Millisecond},
		{Policy{100 * time.Millisecond, time.Second, 0.5}, 4, 0, 800 * time.Millisecond},
		{Policy{100 * time.Millisecond, time.Second, 0.5}, 5, 0, time.Second},
		{Policy{100 * time.Millisecond, time.Second, 0.5}, 1000, 0, time.Second},
		{Policy{100 * time.Millisecond, time.Second, 0.5}, 1, 0.5, 75 * time.Millisecond},
		{Policy{100 * time.Millisecond, time.Second, 0.5}, 5, 0.999999, 500*time.Millisecond + 500*time.Nanosecond},
		// prefetch run's defaults: 10s doubling to 10m, up to 20% jitter.
		{Policy{10 * time.Second, 10 * time.Minute, 0.2}, 1, 0, 10 * time.Second},
		{Policy{10 * time.Second, 10 * time.Minute, 0.2}, 2, 0, 20 * time.Second},
		{Policy{10 * time.Second, 10 * time.Minute, 0.2}, 3, 0, 40 * time.Second},
		{Policy{10 * time.Second, 10 * time.Minute, 0.2}, 6, 0, 320 * time.Second},
		{Policy{10 * time.Second, 10 * time.Minute, 0.2}, 7, 0, 10 * time.Minute}, // 640 s, capped
		{Policy{10 * time.Second, 10 * time.Minute, 0.2}, 50, 0, 10 * time.Minute},
		{Policy{10 * time.Second, 10 * time.Minute, 0.2}, 1, 0.5, 9 * time.Second}, // 10% off
		{Policy{10 * time.Second, 10 * time.Minute, 0.2}, 7, 0.999999, 8*time.Minute + time.Duration(float64(2*time.Minute)*0.000001)},
		{Policy{}, 3, 0.3, 0},
	} {
		if got := tc.p.Delay(tc.attempt, tc.rnd); got != tc.want {
			t.Errorf("%+v.Delay(%d, %v): got %v, want %v", tc.p, tc.attempt, tc.rnd, got, tc.want)
		}
	}
	p := Policy{10 * time.Second, 10 * time.Minute, 0.2}
	for attempt := 1; attempt < 40; attempt++ {
		if got := p.Delay(attempt, 0.3); got <= 0 || got > p.Max {
			t.Errorf("Delay(%d): got %s, want within (0, %s]", attempt, got, p.Max)
		}
	}
}
