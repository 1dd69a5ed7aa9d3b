package watch

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

const ms = time.Millisecond

// fires replays changes at the given offsets through burst the way run does
// (a pending burst fires when its due time comes before the next change) and
// returns the offsets at which it fires.
func fires(d Debounce, changes []time.Duration) []time.Duration {
	var (
		t0  = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		b   burst
		out []time.Duration
	)
	for _, c := range changes {
		now := t0.Add(c)
		if !b.first.IsZero() && !b.due(d).After(now) {
			out = append(out, b.due(d).Sub(t0))
			b = burst{}
		}
		b.add(now, nil)
	}
	if !b.first.IsZero() {
		out = append(out, b.due(d).Sub(t0))
	}
	return out
}

// every returns offsets from 0 to last inclusive, step apart.
func every(step, last time.Duration) []time.Duration {
	var out []time.Duration
	for c := time.Duration(0); c <= last; c += step {
		out = append(out, c)
	}
	return out
}

func TestBurstFires(t *testing.T) {
	t.Parallel()
	fast := Debounce{Quiet: 100 * ms, Max: 1000 * ms}
	tests := []struct {
		name    string
		d       Debounce
		changes []time.Duration
		want    []time.Duration
	}{
		{"one change fires after quiet", fast, []time.Duration{0}, []time.Duration{100 * ms}},
		{"each change restarts quiet", fast, []time.Duration{0, 50 * ms, 90 * ms}, []time.Duration{190 * ms}},
		{"changes further apart than quiet are two bursts", fast, []time.Duration{0, 150 * ms}, []time.Duration{100 * ms, 250 * ms}},
		{"a render's four events are one burst", fast, []time.Duration{0, 1 * ms, 2 * ms, 3 * ms}, []time.Duration{103 * ms}},
		{"fifty renders inside quiet are one burst", Debounce{Quiet: 500 * ms, Max: time.Minute}, every(10*ms, 490*ms), []time.Duration{990 * ms}},
		{"a never-quiet stream still fires at max", fast, every(30*ms, 2010*ms), []time.Duration{1000 * ms, 2020 * ms}},
		{"max shorter than quiet wins", Debounce{Quiet: 500 * ms, Max: 200 * ms}, []time.Duration{0}, []time.Duration{200 * ms}},
		{"zero takes the defaults", Debounce{}, []time.Duration{0}, []time.Duration{DefaultQuiet}},
		{"defaults cap a stream at 2s", Debounce{}, every(150*ms, 2550*ms), []time.Duration{DefaultMax, 2800 * ms}},
		{"negative takes the defaults", Debounce{Quiet: -1, Max: -1}, []time.Duration{0}, []time.Duration{DefaultQuiet}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := fires(tt.d.withDefaults(), tt.changes)
			if !slices.Equal(got, tt.want) {
				t.Errorf("got fires at %v, want %v", got, tt.want)
			}
		})
	}
}

func TestBurstErr(t *testing.T) {
	t.Parallel()
	errA, errB := errors.New("queue or buffer overflow"), errors.New("short read")
	now := time.Now()
	tests := []struct {
		name     string
		errs     []error
		wantIs   error  // nil: want a nil error
		wantText string // the error's text
	}{
		{"changes only", []error{nil, nil}, nil, ""},
		{"one watcher error", []error{nil, errA, nil}, errA, "queue or buffer overflow"},
		{"several keep the first and count the rest", []error{errA, nil, errB, errA}, errA, "queue or buffer overflow (and 2 more watcher errors)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var b burst
			for _, err := range tt.errs {
				b.add(now, err)
			}
			got := b.err()
			if tt.wantIs == nil {
				if got != nil {
					t.Fatalf("got %v, want nil", got)
				}
				return
			}
			if !errors.Is(got, tt.wantIs) {
				t.Errorf("got %v, want it to wrap %v", got, tt.wantIs)
			}
			if got.Error() != tt.wantText {
				t.Errorf("got %q, want %q", got.Error(), tt.wantText)
			}
		})
	}
}

// TestFiresModel checks the replay helper itself on a case worked by hand, so
// the table above tests burst and not a mistaken model.
func TestFiresModel(t *testing.T) {
	t.Parallel()
	got := fmt.Sprint(fires(Debounce{Quiet: 10 * ms, Max: 25 * ms}, []time.Duration{0, 8 * ms, 16 * ms, 24 * ms, 32 * ms, 60 * ms}))
	// Burst 1: 0..24, due min(24+10, 0+25) = 25. Burst 2: 32, due 42. Burst 3: 60, due 70.
	if want := "[25ms 42ms 70ms]"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if got := fires(Debounce{Quiet: 10 * ms, Max: 25 * ms}, nil); len(got) != 0 {
		t.Errorf("got fires at %v for no changes, want none", got)
	}
}
