package watch

import (
	"fmt"
	"time"
)

// Defaults for a zero (or negative) [Debounce] field.
const (
	DefaultQuiet = 250 * time.Millisecond
	DefaultMax   = 2 * time.Second
)

// Debounce is the quiet window and maximum delay for coalescing a burst of
// changes into one call.
type Debounce struct {
	Quiet time.Duration // fire once no event has arrived for this long; default 250ms
	Max   time.Duration // but never later than this after the first event of a burst; default 2s
}

func (d Debounce) withDefaults() Debounce {
	if d.Quiet <= 0 {
		d.Quiet = DefaultQuiet
	}
	if d.Max <= 0 {
		d.Max = DefaultMax
	}
	return d
}

// burst is one burst of changes being coalesced. Its zero value is no burst.
// It reads no clock: the caller passes the time of each change in.
type burst struct {
	first, last time.Time // first and latest change; zero when no burst
	firstErr    error     // first error the watcher reported during the burst
	nerr        int       // how many it reported
}

// add records a change at now, with the watcher's error if that is what it was.
func (b *burst) add(now time.Time, err error) {
	if b.first.IsZero() {
		b.first = now
	}
	b.last = now
	if err != nil {
		if b.firstErr == nil {
			b.firstErr = err
		}
		b.nerr++
	}
}

// due is when the burst should fire: Quiet after its latest change, but no
// later than Max after its first.
func (b *burst) due(d Debounce) time.Time {
	quiet, latest := b.last.Add(d.Quiet), b.first.Add(d.Max)
	if latest.Before(quiet) {
		return latest
	}
	return quiet
}

// err is what the burst reports: nil, or the first watcher error, saying how
// many more there were rather than keeping them all.
func (b *burst) err() error {
	if b.nerr > 1 {
		return fmt.Errorf("%w (and %d more watcher errors)", b.firstErr, b.nerr-1)
	}
	return b.firstErr
}
