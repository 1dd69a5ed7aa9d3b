// Package outage decides how loudly to report a failure that repeats, so
// that a log shipper can alert on ERROR without being flooded (the
// 750-emails-over-a-weekend lesson): the first failure and a changed error
// are loud, so is a reminder each time the failure has lasted another
// alert-after period, and every other repeat is quiet. The recovery ends the
// outage with its attempts and downtime.
//
// Both programs use it: prefetch per image, eventlog for its connection to
// Nomad. It only counts and decides; the caller logs, at the levels and in
// the words of its own domain, and passes the clock. It imports nothing of
// the project's.
package outage

import "time"

// Verdict is how a failure is to be reported.
type Verdict int

const (
	// Repeat is the same error again, within an alert-after period: quiet.
	Repeat Verdict = iota
	// First is the first failure of an outage.
	First
	// Changed is a failure whose error differs from the one before.
	Changed
	// Reminder is a repeat that ends another alert-after period of the
	// outage.
	Reminder
)

// Loud reports whether the failure should be reported loudly (ERROR, or
// WARN where the caller prefers) rather than quietly (DEBUG).
func (v Verdict) Loud() bool { return v != Repeat }

// String says why the failure is reported as it is.
func (v Verdict) String() string {
	switch v {
	case First:
		return "first failure"
	case Changed:
		return "the error changed"
	case Reminder:
		return "still failing"
	}
	return "the same error again"
}

// Log is the state of one thing's outage; its zero value is no outage.
type Log struct {
	since     time.Time
	lastErr   string
	attempts  int
	reminders int
}

// Failed records a failure at now with the error msg, and returns how to
// report it. With alertAfter > 0, the failure that finds the outage has
// lasted another alertAfter since the last reminder is a Reminder.
func (o *Log) Failed(now time.Time, msg string, alertAfter time.Duration) Verdict {
	o.attempts++
	switch {
	case o.attempts == 1:
		o.since, o.lastErr = now, msg
		return First
	case msg != o.lastErr:
		o.lastErr = msg
		return Changed
	}
	if alertAfter > 0 {
		if n := int(now.Sub(o.since) / alertAfter); n > o.reminders {
			o.reminders = n
			return Reminder
		}
	}
	return Repeat
}

// Recovered ends the outage at now: ok is false when there was none.
func (o *Log) Recovered(now time.Time) (attempts int, downtime time.Duration, ok bool) {
	if o.attempts == 0 {
		return 0, 0, false
	}
	attempts, downtime = o.attempts, now.Sub(o.since)
	*o = Log{}
	return attempts, downtime, true
}

// Down reports whether an outage is under way.
func (o *Log) Down() bool { return o.attempts > 0 }

// Attempts is the number of failures of the outage under way.
func (o *Log) Attempts() int { return o.attempts }

// Since is when the outage under way began (zero when there is none).
func (o *Log) Since() time.Time { return o.since }
