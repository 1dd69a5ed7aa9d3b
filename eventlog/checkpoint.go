package eventlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/halock"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

// While this instance holds the HA lock, the stream reaches stdout through
// a gate: whole frames wait there until the lock's variable holds the index
// of the last of them (the checkpoint), and only then are written to
// stdout. Stdout is never ahead of the checkpoint, so a new holder, which
// resumes after the checkpoint, never writes an event this one wrote, even
// when this one is partitioned from Nomad or killed: what it had not
// written yet is what the new holder writes. The other order (write, then
// checkpoint) would have every failover repeat the events written since the
// last checkpoint.
//
// The price: in HA mode events reach stdout in batches, one per checkpoint,
// at most every -state-interval (a quiet stream's next event goes at once).
// What is left is a window of one write to stdout: killed between the
// checkpoint's answer and the end of that write, an instance loses what the
// write held (docs/eventlog.md). A write that fits in the pipe is not cut
// by a kill; so batches are kept to the pipe's size (growPipe raises it to
// 1 MiB) by committing early when that much waits.

// batchBytes is the size of whole frames waiting that is committed at once,
// without waiting for the interval: about what a pipe grown by growPipe
// takes in one write.
const batchBytes = pipeBytes

// pipeBytes is what growPipe raises a stdout pipe to, in either mode: the
// unprivileged maximum by default (/proc/sys/fs/pipe-max-size).
const pipeBytes = 1 << 20

// readBytes and writeBytes are the stream's read buffer and stdout's
// write buffer outside HA mode. A busy stream is then read 1 MiB at a time
// (what Nomad's socket holds by then), and stdout written in a few writes
// per read: a twentieth of the system calls and wake-ups of 64 KiB buffers
// (docs/BENCHMARKS.md). HA mode keeps the Streamer's and Lines' 64 KiB,
// which keeps a batch within a lock of batchBytes: a read of a megabyte
// would let one grow to two.
const (
	readBytes  = 1 << 20
	writeBytes = 256 << 10
)

// maxPending bounds the bytes of whole frames waiting for their checkpoint:
// that much holds the reading of the stream back until the committer
// catches up (as a blocked stdout does).
const maxPending = 8 << 20

// gate is the writer the Streamer's Lines write to while the lock is held.
type gate struct {
	mu      sync.Mutex
	space   *sync.Cond
	partial []byte // written since the last mark: frames not known whole yet
	pending []byte // whole frames, up to upto
	marks   []mark
	upto    nomad.Position // of the last whole frame received
	err     error          // set: writes fail with it (the lock is lost)
	stopped bool           // set: flushed no longer waits for space
	wake    chan struct{}
}

// mark is where a frame ends in pending, and its position.
type mark struct {
	end int
	pos nomad.Position
}

func newGate(upto nomad.Position) *gate {
	g := &gate{upto: upto, wake: make(chan struct{}, 1)}
	g.space = sync.NewCond(&g.mu)
	return g
}

func (g *gate) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return 0, g.err
	}
	g.partial = append(g.partial, p...)
	return len(p), nil
}

// flushed is the Lines' Flushed: what was written so far is the frames
// up to pos. It waits while maxPending bytes wait for their checkpoint.
func (g *gate) flushed(pos nomad.Position) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil || len(g.partial) == 0 && pos == g.upto {
		return
	}
	g.pending = append(g.pending, g.partial...)
	g.partial = g.partial[:0]
	g.marks = append(g.marks, mark{end: len(g.pending), pos: pos})
	g.upto = pos
	select {
	case g.wake <- struct{}{}:
	default:
	}
	for len(g.pending) >= maxPending && g.err == nil && !g.stopped {
		g.space.Wait()
	}
}

// take hands the whole frames to the committer.
func (g *gate) take() (batch []byte, marks []mark, upto nomad.Position) {
	g.mu.Lock()
	defer g.mu.Unlock()
	batch, marks, upto = g.pending, g.marks, g.upto
	g.pending, g.marks = nil, nil
	g.space.Broadcast()
	return batch, marks, upto
}

// state is how many bytes wait, and the position of the last whole frame.
func (g *gate) state() (int, nomad.Position) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.pending), g.upto
}

// stop ends the waits of flushed; with err (the lock is lost), later
// writes fail with it and what waits is dropped.
func (g *gate) stop(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopped = true
	if err != nil && g.err == nil {
		g.err = err
		g.pending, g.marks, g.partial = nil, nil, nil
	}
	g.space.Broadcast()
}

// committer moves frames from the gate to stdout, each batch after its
// checkpoint.
type committer struct {
	g        *gate
	lease    *halock.Lease
	lock     *nomad.VarLock
	out      io.Writer
	interval time.Duration
	now      func() time.Time
	log      *slog.Logger
	state    *haState

	items     map[string]string // the variable's items, as last written
	cas       uint64            // the variable's ModifyIndex
	committed nomad.Position    // the checkpoint: the position in the variable
	last      time.Time         // of the last commit
}

// loop commits until ctx ends or a commit fails.
func (c *committer) loop(ctx context.Context) error {
	for {
		if !c.hasWork() {
			select {
			case <-ctx.Done():
				return nil
			case <-c.g.wake:
				continue
			}
		}
		if c.pace(ctx) != nil {
			return nil
		}
		if err := c.commit(); err != nil {
			return err
		}
	}
}

func (c *committer) hasWork() bool {
	n, upto := c.g.state()
	return n > 0 || upto != c.committed
}

// pace waits until the interval since the last commit has passed, or until
// batchBytes wait.
func (c *committer) pace(ctx context.Context) error {
	for {
		n, _ := c.g.state()
		wait := c.last.Add(c.interval).Sub(c.now())
		if wait <= 0 || n >= batchBytes {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-c.g.wake:
		}
		t.Stop()
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// commit takes the whole frames, writes the index of the last to the
// lock's variable, then writes them to stdout. When the checkpoint cannot
// be written, the frames are dropped: they are after the checkpoint, so the
// next holder writes them.
func (c *committer) commit() error {
	batch, marks, upto := c.g.take()
	c.last = c.now()
	prev := c.committed
	if upto != c.committed {
		if err := c.checkpoint(upto); err != nil {
			return err
		}
	}
	if len(batch) == 0 {
		return nil
	}
	n, err := c.out.Write(batch)
	if err == nil {
		return nil
	}
	// Stdout failed: the checkpoint goes back to the last frame written
	// whole, so that the next holder writes the rest.
	back := prev
	for _, m := range marks {
		if m.end <= n {
			back = m.pos
		}
	}
	if back != c.committed {
		if cerr := c.checkpoint(back); cerr != nil {
			c.log.Error("HA checkpoint not moved back after stdout failed: the frames after the last one written whole are lost",
				"index", back.Index, "checkpoint", c.committed.Index, "error", cerr.Error())
		}
	}
	return &nomad.WriteError{Err: err}
}

// checkpoint writes pos to the lock's variable (items index and frames), retrying while the lock is
// held. A write whose answer was lost may have landed: the 409 its retry
// gets is resolved by renewing (is the lock still ours?) and reading the
// variable (did the write land?).
func (c *committer) checkpoint(pos nomad.Position) error {
	items := maps.Clone(c.items)
	if items == nil {
		items = map[string]string{}
	}
	items["index"] = strconv.FormatUint(pos.Index, 10)
	items["frames"] = strconv.Itoa(pos.Frames)
	conflicts := 0
	for {
		if err := c.lease.Held(); err != nil {
			return err
		}
		cas, nl, err := c.lock.Write(context.Background(), c.lease.ID(), c.cas, items)
		var ce *nomad.ConflictError
		switch {
		case err == nil:
			c.lease.Reported(nl.TTL)
			c.committed, c.cas, c.items = pos, cas, items
			c.state.checkpoint.Store(pos.Index)
			return nil
		case errors.As(err, &ce):
			if conflicts++; conflicts > 3 {
				c.lease.Lose(fmt.Errorf("checkpoint writes keep being refused: %w", err))
				return c.lease.Held()
			}
			landed, err := c.resolve(pos)
			if err != nil {
				return err
			}
			if landed {
				c.committed, c.items = pos, items
				c.state.checkpoint.Store(pos.Index)
				return nil
			}
		default:
			c.log.Debug("HA checkpoint write failed; retrying while the lock is held", "index", pos.Index, "error", err.Error())
			time.Sleep(min(c.interval, 250*time.Millisecond))
		}
	}
}

// resolve follows a refused checkpoint write: it returns the lock lost
// error when Nomad says so, and otherwise whether the variable already
// holds pos (an earlier attempt landed), its ModifyIndex taken for the next
// write.
func (c *committer) resolve(pos nomad.Position) (landed bool, err error) {
	if err := c.lease.Renew(context.Background()); err != nil {
		if lost := c.lease.Held(); lost != nil {
			return false, lost
		}
		// Not refused, just failed: the read below may still tell.
	}
	v, found, err := c.lock.Read(context.Background(), 0, 0)
	switch {
	case err != nil:
		return false, nil
	case !found:
		c.lease.Lose(errors.New("the lock's variable was deleted"))
		return false, c.lease.Held()
	case v.LockID != "" && v.LockID != c.lease.ID():
		c.lease.Lose(errors.New("the lock's variable holds another lock"))
		return false, c.lease.Held()
	}
	c.cas = v.ModifyIndex
	return v.Items["index"] == strconv.FormatUint(pos.Index, 10) && v.Items["frames"] == strconv.Itoa(pos.Frames), nil
}
