package peer

import (
	"errors"
	"io"
	"testing"
	"testing/synctest"
	"time"
)

// slowWriter takes each write after per (on the fake clock): a peer that
// reads steadily, only slower than the others.
type slowWriter struct{ per time.Duration }

func (s slowWriter) Write(p []byte) (int, error) {
	time.Sleep(s.per)
	return len(p), nil
}

// A shared save waits for a peer that is slower than the others, each
// chunk less than lag, only up to lag in all: then the slow one is cut off
// (it asks again, for a save at its own pace) and the others go on at
// theirs.
func TestShareCutsOffASlowPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sh := newShare(time.Minute, 200*time.Millisecond, func() {})
		fast, _ := sh.join(&deadlineWriter{w: io.Discard, stall: time.Minute})
		slow, _ := sh.join(&deadlineWriter{w: slowWriter{per: 50 * time.Millisecond}, stall: time.Minute})
		ends := map[*taker]chan error{fast: make(chan error, 1), slow: make(chan error, 1)}
		for tk, end := range ends {
			go func() { end <- tk.send(sh, nil) }()
		}
		start := time.Now()
		chunk := make([]byte, 256<<10)
		const chunks = 64 // 16 MiB: 3.2 s at the slow peer's pace
		for range chunks {
			if _, err := sh.Write(chunk); err != nil {
				t.Fatal(err)
			}
		}
		sh.finish(nil)
		if err := <-ends[fast]; err != nil {
			t.Fatalf("the fast peer: %v", err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("the fast peer was held %s (the slow one's pace), want at most about the 200 ms lag", took)
		}
		if err := <-ends[slow]; !errors.Is(err, errBehind) {
			t.Fatalf("the slow peer: %v, want it cut off for falling behind", err)
		}
		if fast.w.n != chunks*int64(len(chunk)) {
			t.Errorf("the fast peer was sent %d bytes, want %d", fast.w.n, chunks*len(chunk))
		}
	})
}
