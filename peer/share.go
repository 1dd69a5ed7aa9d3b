package peer

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// A share is one save of an image, sent to every peer that asked for it
// while it began: the peers waiting at the agent that has just got an
// image are answered in the same moment, and one save serves them all
// (on Docker's containerd image store a save, not the network, is what a
// copy waits for). Each peer still takes a transfer slot of its own.
//
// A peer joins while the archive's first maxReplay bytes are being sent
// (it is sent those first, then what follows); past that, or once the save
// ended, a peer that asks starts a save of its own. Each peer is sent the
// save's chunks by its own request's goroutine, from a queue of queued
// chunks, so that the peers go at their own pace within that; the save
// waits for the slowest only once its queue is full, and a peer the save
// has waited for lag in all while others share it is cut off (it refuses
// the cut archive and asks again, to get a save at its own pace), so that
// one stalled or slow peer does not hold the others for longer.
type share struct {
	mu     sync.Mutex
	takers []*taker
	prefix [][]byte // the chunks sent so far, while peers may join
	size   int      // their bytes
	open   bool
	cancel func()        // ends the save
	stall  time.Duration // how long the save waits for a peer alone
	behind time.Duration // and for one of several (lag)
}

// The bounds of a share: what it keeps for the peers that join it
// (maxReplay, while the archive's first bytes are sent: the peers answered
// at the same moment join within milliseconds), how far a peer may fall
// behind the save (queued chunks of up to the save's 256 KiB buffer each).
// A save being served holds at most their sum and its buffer: 3.25 MiB.
const (
	maxReplay = 2 << 20
	queued    = 4
)

var (
	// errNoTaker ends a save whose every peer left.
	errNoTaker = errors.New("every peer it was for left")
	// errBehind is why a peer that fell behind a shared save was cut off.
	errBehind = errors.New("fell behind the other peers sharing the save")
)

// taker is one peer's side of a share.
type taker struct {
	w       *deadlineWriter
	pending [][]byte      // the share's chunks before this peer joined
	chunks  chan []byte   // then these; closed at the save's end
	cut     chan struct{} // closed when the share cut this peer off
	gone    chan struct{} // closed when its request ended
	err     error         // the save's error, or errBehind; read once chunks or cut is closed
	waited  time.Duration // how long the save, shared, has waited for this peer in all (the save's goroutine's)
}

func newShare(stall, behind time.Duration, cancel func()) *share {
	return &share{open: true, cancel: cancel, stall: stall, behind: behind}
}

// join adds a peer, sent to through w, to the share, unless it no longer
// takes peers.
func (sh *share) join(w *deadlineWriter) (*taker, bool) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if !sh.open {
		return nil, false
	}
	t := &taker{w: w, pending: slices.Clone(sh.prefix), chunks: make(chan []byte, queued), cut: make(chan struct{}), gone: make(chan struct{})}
	sh.takers = append(sh.takers, t)
	return t, true
}

// lag is how long in all a shared save waits for a peer that fell behind,
// whether it stopped or is only slower than the others: half of
// stall_timeout (5 s at the least, so well before the others' stall
// watchdogs give up on them), at most 10 s. A peer alone sets its own
// pace, bounded by stall_timeout a write.
func lag(stall time.Duration) time.Duration { return min(stall/2, 10*time.Second) }

// Write queues p for every peer of the share and cuts off the ones that
// fall behind; it fails once no peer is left.
func (sh *share) Write(p []byte) (int, error) {
	c := slices.Clone(p) // the save's buffer is written again; the chunk is read by every peer
	sh.mu.Lock()
	if sh.open {
		if sh.size+len(c) <= maxReplay {
			sh.prefix, sh.size = append(sh.prefix, c), sh.size+len(c)
		} else {
			sh.open, sh.prefix = false, nil
		}
	}
	takers := slices.Clone(sh.takers)
	sh.mu.Unlock()
	var full []*taker
	for _, t := range takers {
		select {
		case t.chunks <- c:
		case <-t.gone:
		default:
			full = append(full, t)
		}
	}
	shared := len(takers) > 1
	for _, t := range full {
		d := sh.stall
		if shared {
			d = max(sh.behind-t.waited, 0)
		}
		start := time.Now()
		timer := time.NewTimer(d)
		select {
		case t.chunks <- c:
		case <-t.gone:
		case <-timer.C:
			sh.cutOff(t)
		}
		timer.Stop()
		if shared {
			t.waited += time.Since(start)
		}
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if len(sh.takers) == 0 {
		sh.open = false
		return 0, errNoTaker
	}
	return len(p), nil
}

func (sh *share) cutOff(t *taker) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.remove(t) {
		t.err = errBehind
		close(t.cut)
		// A write to it in flight ends now, rather than at its pace.
		if t.w.rc != nil {
			_ = t.w.rc.SetWriteDeadline(time.Now())
		}
	}
}

// remove takes t out of the takers; false if it was not in them.
func (sh *share) remove(t *taker) bool {
	n := len(sh.takers)
	sh.takers = slices.DeleteFunc(sh.takers, func(o *taker) bool { return o == t })
	return len(sh.takers) < n
}

// finish ends the share: err is the save's. Each peer is sent what it has
// queued and then told how the save ended.
func (sh *share) finish(err error) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, t := range sh.takers {
		t.err = err
		close(t.chunks)
	}
	sh.takers, sh.open, sh.prefix = nil, false, nil
}

// leave takes t out of the share, its request having ended; the save ends
// when t was the last peer.
func (sh *share) leave(t *taker) {
	close(t.gone)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.remove(t)
	if len(sh.takers) == 0 {
		sh.open = false
		sh.cancel()
	}
}

// send sends the share's chunks to the peer until the save's end; it
// returns the save's error, or why the peer got no more.
func (t *taker) send(sh *share, done <-chan struct{}) error {
	defer sh.leave(t)
	cutOff := func() error { return fmt.Errorf("%w (%d bytes sent)", t.err, t.w.n) }
	write := func(c []byte) error {
		select {
		case <-t.cut:
			return cutOff()
		default:
		}
		if _, err := t.w.Write(c); err != nil {
			select {
			case <-t.cut: // the write was ended by the cut
				return cutOff()
			default:
				return err
			}
		}
		return nil
	}
	for _, c := range t.pending {
		if err := write(c); err != nil {
			return err
		}
	}
	t.pending = nil
	for {
		select {
		case <-t.cut:
			return cutOff()
		case <-done:
			return errors.New("the request ended")
		case c, ok := <-t.chunks:
			if !ok {
				return t.err
			}
			if err := write(c); err != nil {
				return err
			}
		}
	}
}
