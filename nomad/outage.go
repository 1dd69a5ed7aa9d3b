package nomad

import (
	"context"
	"log/slog"
	"time"

	outagelog "github.com/nomad-prefetch/nomad-prefetch/outage"
)

// outage logs a connection outage without flooding, as the outage package
// decides: loudly (WARN, or ERROR when Nomad refused) on the first failure
// and when the error changes, at ERROR as a reminder each time the outage
// has lasted another alertAfter, every other failure at DEBUG. The recovery
// is logged at INFO with the number of attempts and the downtime.
type outage struct {
	log        *slog.Logger
	now        func() time.Time
	alertAfter time.Duration
	stats      *Stats

	everLive bool
	run      outagelog.Log
}

func (o *outage) failed(err error, refused bool, attempt int, retryIn time.Duration) {
	now := o.now()
	msg := err.Error()
	o.stats.lastErr.Store(&msg)
	o.stats.refused.Store(refused)
	if o.stats.downSince.Load() == 0 {
		o.stats.downSince.Store(now.UnixNano())
	}
	level := slog.LevelWarn
	if refused {
		level = slog.LevelError
	}
	attrs := []any{"error", msg, "attempt", attempt, "retry_in", retryIn.Round(time.Millisecond).String()}
	verdict := o.run.Failed(now, msg, o.alertAfter)
	if verdict != outagelog.First {
		attrs = append(attrs, "down_for", now.Sub(o.run.Since()).Round(time.Second).String())
	}
	switch verdict {
	case outagelog.First:
		o.log.Log(context.Background(), level, "event stream down", attrs...)
	case outagelog.Changed:
		o.log.Log(context.Background(), level, "event stream still down, with a new error", attrs...)
	case outagelog.Reminder:
		o.log.Error("event stream still down", attrs...)
	default:
		o.log.Debug("event stream still down", attrs...)
	}
}

func (o *outage) recovered() {
	o.stats.refused.Store(false)
	if attempts, downtime, ok := o.run.Recovered(o.now()); ok {
		o.log.Info("event stream resumed", "attempts", attempts, "downtime", downtime.Round(time.Millisecond).String())
		return
	}
	if !o.everLive {
		o.everLive = true
		o.log.Info("event stream subscribed")
	}
}
