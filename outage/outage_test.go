package outage

import (
	"testing"
	"time"
)

func TestLog(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const alertAfter = 6 * time.Hour
	var o Log
	steps := []struct {
		at   time.Duration
		err  string
		want Verdict
	}{
		{0, "refused", First},
		{10 * time.Second, "refused", Repeat},
		{30 * time.Second, "refused", Repeat},
		{time.Minute, "timeout", Changed},
		{2 * time.Minute, "timeout", Repeat},
		{5*time.Hour + 59*time.Minute, "timeout", Repeat},
		{6*time.Hour + time.Minute, "timeout", Reminder},
		{6*time.Hour + 11*time.Minute, "timeout", Repeat},
		{18*time.Hour + 5*time.Minute, "timeout", Reminder}, // one reminder for two periods
		{18*time.Hour + 15*time.Minute, "timeout", Repeat},
		{24*time.Hour + 1*time.Minute, "timeout", Reminder},
	}
	for i, s := range steps {
		if got := o.Failed(t0.Add(s.at), s.err, alertAfter); got != s.want {
			t.Errorf("step %d (%s, %q): got %s, want %s", i, s.at, s.err, got, s.want)
		}
		if !o.Down() || o.Attempts() != i+1 || !o.Since().Equal(t0) {
			t.Errorf("step %d: got down %v, %d attempts since %s", i, o.Down(), o.Attempts(), o.Since())
		}
	}
	attempts, downtime, ok := o.Recovered(t0.Add(25 * time.Hour))
	if !ok || attempts != len(steps) || downtime != 25*time.Hour {
		t.Errorf("Recovered: got %d attempts, %s, %v; want %d, 25h, true", attempts, downtime, ok, len(steps))
	}
	if _, _, ok := o.Recovered(t0); ok || o.Down() {
		t.Error("recovered twice: got ok, want a reset log")
	}
	if got := o.Failed(t0.Add(26*time.Hour), "timeout", alertAfter); got != First {
		t.Errorf("first failure after a recovery: got %s, want %s", got, First)
	}
	var quiet Log
	quiet.Failed(t0, "x", 0)
	if got := quiet.Failed(t0.Add(1000*time.Hour), "x", 0); got != Repeat {
		t.Errorf("no alert-after: got %s, want %s (no reminders)", got, Repeat)
	}
	for v, loud := range map[Verdict]bool{First: true, Changed: true, Reminder: true, Repeat: false} {
		if v.Loud() != loud {
			t.Errorf("%s: Loud() = %v", v, !loud)
		}
	}
}
