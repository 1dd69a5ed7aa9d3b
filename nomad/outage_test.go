package nomad

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestOutageThrottling(t *testing.T) {
	t.Parallel()
	logs := newLogSink()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o := outage{log: slog.New(logs), now: func() time.Time { return now }, alertAfter: time.Hour, stats: new(Stats)}
	refused := &RefusedError{Reason: "refused"}
	steps := []struct {
		advance time.Duration
		err     error // nil: the subscription went live
		want    string
	}{
		{0, nil, "INFO event stream subscribed"},
		{0, errors.New("dial: refused"), "WARN event stream down error=dial: refused attempt=1"},
		{time.Minute, errors.New("dial: refused"), "DEBUG event stream still down"},
		{time.Minute, refused, "ERROR event stream still down, with a new error error=refused"},
		{10 * time.Minute, refused, "DEBUG event stream still down"},
		{50 * time.Minute, refused, "ERROR event stream still down error=refused attempt=5 retry_in=1s down_for=1h2m0s"},
		{time.Minute, refused, "DEBUG event stream still down"},
		{3 * time.Hour, refused, "ERROR event stream still down"},
		{10 * time.Minute, refused, "DEBUG event stream still down"},
		{time.Minute, nil, "INFO event stream resumed attempts=8 downtime=4h14m0s"},
		{0, errors.New("EOF"), "WARN event stream down error=EOF attempt=1"},
		{0, nil, "INFO event stream resumed attempts=1 downtime=0s"},
	}
	attempt := 0
	for i, s := range steps {
		now = now.Add(s.advance)
		if s.err == nil {
			attempt = 0
			o.recovered()
		} else {
			attempt++
			o.failed(s.err, errors.As(s.err, new(*RefusedError)), attempt, time.Second)
		}
		recs := logs.all()
		if len(recs) != i+1 {
			t.Fatalf("step %d: got %d records, want %d", i, len(recs), i+1)
		}
		if got := recs[i]; !strings.HasPrefix(got, s.want) {
			t.Errorf("step %d: got %q, want prefix %q", i, got, s.want)
		}
	}
}
