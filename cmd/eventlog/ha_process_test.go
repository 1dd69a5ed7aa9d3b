package main

import (
	"encoding/json"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
)

// The failover tests run two real eventlog processes against the test
// server, as two allocations of the job with count = 2 would run against
// Nomad. Nomad takes lock TTLs of 10 s and more and resets a lock to 15 s
// when its holder writes the items; the server here takes 1 s, so that a
// failover takes seconds, not half a minute.

const haLock = "nomad/jobs/eventlog/lock"

// haArgs are an instance's flags.
func haArgs(url string, extra ...string) []string {
	return append([]string{"-address", url, "-ha-lock", haLock, "-ha-ttl", "1s", "-ha-lock-delay", "1s",
		"-index", "0", "-topic", "Job", "-state-interval", "200ms"}, extra...)
}

// publisher publishes an event every few milliseconds until halted.
type publisher struct {
	mu        sync.Mutex
	published []uint64
	stop      chan struct{}
	done      chan struct{}
}

func startPublisher(t *testing.T, srv *nomadtest.Server) *publisher {
	p := &publisher{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 20000; i++ { // bounded: a minute and a half at most
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			idx := srv.Publish(event(i))
			p.mu.Lock()
			p.published = append(p.published, idx)
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() { p.halt() })
	return p
}

// halt stops publishing and returns every index published.
func (p *publisher) halt() []uint64 {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.published
}

// indexes returns the Index of each line of an output; a last line without
// its newline (a write cut by kill -9) is reported.
func indexes(t *testing.T, name, out string) []uint64 {
	t.Helper()
	if out != "" && !strings.HasSuffix(out, "\n") {
		t.Errorf("%s: the output ends inside a line: %.80q", name, out[strings.LastIndex(out, "\n")+1:])
		out = out[:strings.LastIndex(out, "\n")+1]
	}
	var idx []uint64
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if l == "" {
			continue
		}
		var e struct{ Index uint64 }
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("%s: line %.80q: %v", name, l, err)
		}
		idx = append(idx, e.Index)
	}
	return idx
}

// lastIndexIs is a WaitFor condition: the output's last line is of index.
func lastIndexIs(index uint64) func(string) bool {
	want := `"Index":` + jsonUint(index) + `,`
	return func(s string) bool {
		s = strings.TrimSuffix(s, "\n")
		return strings.Contains(s[strings.LastIndex(s, "\n")+1:], want)
	}
}

func jsonUint(n uint64) string { b, _ := json.Marshal(n); return string(b) }

// unionOnce checks that a's and b's outputs together hold every published
// event once, each in order, and that a wrote only before b: a's last index
// is below b's first.
func unionOnce(t *testing.T, published, a, b []uint64) {
	t.Helper()
	seen := map[uint64]int{}
	for _, i := range append(append([]uint64(nil), a...), b...) {
		seen[i]++
	}
	lost, repeated := 0, 0
	for _, i := range published {
		switch n := seen[i]; {
		case n == 0:
			lost++
		case n > 1:
			repeated++
		}
		delete(seen, i)
	}
	if lost > 0 || repeated > 0 || len(seen) > 0 {
		t.Errorf("of %d events published, %d lost, %d repeated, %d never published", len(published), lost, repeated, len(seen))
	}
	for name, o := range map[string][]uint64{"first": a, "second": b} {
		for j := 1; j < len(o); j++ {
			if o[j] <= o[j-1] {
				t.Errorf("%s instance: index %d after %d", name, o[j], o[j-1])
			}
		}
	}
	if len(a) > 0 && len(b) > 0 && a[len(a)-1] >= b[0] {
		t.Errorf("the first instance wrote index %d, the second started at %d: they overlap", a[len(a)-1], b[0])
	}
}

// startPair starts a, waits for it to hold the lock, then b as a standby.
func startPair(t *testing.T, srv *nomadtest.Server, args []string) (a, b *proc) {
	t.Helper()
	a = startProc(t, []string{"NOMAD_TOKEN=a"}, args...)
	a.stderr.WaitFor(t, "the first instance to hold the lock", func(s string) bool { return strings.Contains(s, "HA lock acquired") })
	b = startProc(t, []string{"NOMAD_TOKEN=b"}, args...)
	b.stderr.WaitFor(t, "the second instance to wait", func(s string) bool { return strings.Contains(s, "standby: another instance holds") })
	return a, b
}

// finishOnB, once b holds the lock: b writes 100 more lines, the publisher
// stops, b writes the last event and ends on SIGTERM with 0, and every
// published event is in a's or b's output exactly once.
func finishOnB(t *testing.T, pub *publisher, a, b *proc) {
	t.Helper()
	b.stdout.WaitLines(t, 100)
	published := pub.halt()
	b.stdout.WaitFor(t, "the last event", lastIndexIs(published[len(published)-1]))
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := b.wait(t); code != exitOK {
		t.Errorf("the second instance: exit %d, want 0; stderr:\n%s", code, b.stderr)
	}
	unionOnce(t, published, indexes(t, "first", a.stdout.String()), indexes(t, "second", b.stdout.String()))
}

// kill -9 of the holder mid-stream: the standby takes over once Nomad lets
// the lock lapse (twice the TTL, then the lock delay), resumes from the
// checkpoint, and the two outputs hold every event once.
func TestHAFailoverKill9(t *testing.T) {
	t.Parallel()
	srv := nomadtest.StartT(t, nomadtest.Options{BufferSize: 100000, MinLockTTL: time.Second, DefaultLockTTL: time.Second, DefaultLockDelay: time.Second})
	a, b := startPair(t, srv, haArgs(srv.URL))
	pub := startPublisher(t, srv)
	a.stdout.WaitLines(t, 100)
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	a.wait(t)
	b.stderr.WaitFor(t, "the standby to take over", func(s string) bool { return strings.Contains(s, "HA lock acquired") })
	finishOnB(t, pub, a, b)
	if strings.Contains(b.stderr.String(), "gap") {
		t.Errorf("the second instance reported a gap:\n%s", b.stderr)
	}
}

// A partition of the holder (every connection it has to Nomad frozen): it
// stops on its own once it could not renew within the TTL, before the
// standby can take the lock; the standby resumes from the checkpoint; once
// healed the old holder waits as a standby. Every event once, and nothing
// written by both.
func TestHAFailoverPartition(t *testing.T) {
	t.Parallel()
	srv := nomadtest.StartT(t, nomadtest.Options{BufferSize: 100000, MinLockTTL: time.Second, DefaultLockTTL: time.Second, DefaultLockDelay: time.Second})
	a, b := startPair(t, srv, haArgs(srv.URL))
	pub := startPublisher(t, srv)
	a.stdout.WaitLines(t, 100)
	srv.Partition("a")
	a.stderr.WaitFor(t, "the partitioned holder to stop", func(s string) bool { return strings.Contains(s, "HA lock lost") })
	b.stderr.WaitFor(t, "the standby to take over", func(s string) bool { return strings.Contains(s, "HA lock acquired") })
	b.stdout.WaitLines(t, 100)
	srv.Heal("a")
	a.stderr.WaitFor(t, "the old holder to wait as a standby", func(s string) bool { return strings.Contains(s, "standby: another instance holds") })
	published := pub.halt()
	b.stdout.WaitFor(t, "the last event", lastIndexIs(published[len(published)-1]))
	for name, p := range map[string]*proc{"first": a, "second": b} {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := p.wait(t); code != exitOK {
			t.Errorf("%s instance: exit %d, want 0; stderr:\n%s", name, code, p.stderr)
		}
	}
	unionOnce(t, published, indexes(t, "first", a.stdout.String()), indexes(t, "second", b.stdout.String()))
	var lost []string
	for _, l := range strings.Split(a.stderr.String(), "\n") {
		if strings.Contains(l, "HA lock lost") {
			lost = append(lost, l)
		}
	}
	if len(lost) != 1 || !strings.Contains(lost[0], "no renewal succeeded within the lock's TTL") {
		t.Errorf("got %q, want one line saying the holder could not renew within the TTL", lost)
	}
}

// SIGTERM of the holder releases the lock, and the standby takes over at
// once: its lock delay here is an hour, so it can only have been the
// release it saw, not a lapse.
func TestHAFailoverSIGTERM(t *testing.T) {
	t.Parallel()
	srv := nomadtest.StartT(t, nomadtest.Options{BufferSize: 100000, MinLockTTL: time.Second, DefaultLockTTL: time.Hour, DefaultLockDelay: time.Hour})
	args := haArgs(srv.URL, "-ha-ttl", "5s", "-ha-lock-delay", "1h")
	a, b := startPair(t, srv, args)
	pub := startPublisher(t, srv)
	a.stdout.WaitLines(t, 100)
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := a.wait(t); code != exitOK {
		t.Errorf("the first instance: exit %d, want 0; stderr:\n%s", code, a.stderr)
	}
	if !strings.Contains(a.stderr.String(), "HA lock released") {
		t.Errorf("the first instance did not release the lock:\n%s", a.stderr)
	}
	finishOnB(t, pub, a, b)
}
