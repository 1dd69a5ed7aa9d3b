package nomad

import (
	"context"
	"log/slog"
	"time"
)

// outage logs a connection outage without flooding: loudly (WARN, or ERROR
// when Nomad refused) on the first failure, again when the error changes,
// and at ERROR as a reminder each time the outage has lasted another
// alertAfter; every other failure at DEBUG. The recovery is logged at INFO
// with the number of attempts and the downtime.
type outage struct {
	log        *slog.Logger
	now        func() time.Time
	alertAfter time.Duration
	stats      *Stats

	down         bool
	everLive     bool
	since        time.Time
	attempts     int
	lastErr      string
	nextReminder time.Time
}

func (o *outage) failed(err error, refused bool, attempt int, retryIn time.Duration) {
	now := o.now()
	msg := err.Error()
	o.stats.refused.Store(refused)
	if o.stats.downSince.Load() == 0 {
		o.stats.downSince.Store(now.UnixNano())
	}
	level := slog.LevelWarn
	if refused {
		level = slog.LevelError
	}
	attrs := []any{"error", msg, "attempt", attempt, "retry_in", retryIn.Round(time.Millisecond).String()}
	if !o.down {
		o.down, o.since, o.attempts, o.lastErr = true, now, 1, msg
		o.nextReminder = now.Add(o.alertAfter)
		o.log.Log(context.Background(), level, "event stream down", attrs...)
		return
	}
	o.attempts++
	attrs = append(attrs, "down_for", now.Sub(o.since).Round(time.Second).String())
	switch {
	case msg != o.lastErr:
		o.lastErr = msg
		o.log.Log(context.Background(), level, "event stream still down, with a new error", attrs...)
	case !now.Before(o.nextReminder):
		for !now.Before(o.nextReminder) {
			o.nextReminder = o.nextReminder.Add(o.alertAfter)
		}
		o.log.Error("event stream still down", attrs...)
	default:
		o.log.Debug("event stream still down", attrs...)
	}
}

func (o *outage) recovered() {
	o.stats.refused.Store(false)
	if o.down {
		o.log.Info("event stream resumed", "attempts", o.attempts, "downtime", o.now().Sub(o.since).Round(time.Millisecond).String())
		o.down = false
		return
	}
	if !o.everLive {
		o.everLive = true
		o.log.Info("event stream subscribed")
	}
}
