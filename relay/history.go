package relay

import (
	"errors"
	"sync"
)

// Default bounds of a History.
const (
	DefaultMaxBytes      = 64 << 20
	DefaultMaxFrameBytes = 16 << 20
)

// HistoryOptions bound a History. Zero values take the defaults.
type HistoryOptions struct {
	MaxBytes      int // total bytes of the frames kept (default 64 MiB)
	MaxFrameBytes int // a longer frame is not kept: the history breaks there (default 16 MiB)
	// MaxBacklog is how many bytes a reader may lag behind the newest
	// frame before it is cut off (default MaxBytes/4).
	MaxBacklog int
}

type entry struct {
	seq   uint64
	index uint64
	line  []byte // the frame and its newline
	end   uint64 // bytes added up to and including this entry
}

// History is a byte-bounded ring of Nomad frames. Safe for concurrent use.
type History struct {
	opts HistoryOptions

	mu      sync.Mutex
	entries []entry // oldest first
	bytes   int     // of entries
	nextSeq uint64
	total   uint64 // bytes ever added
	// floor is the lowest index a resume is exact from: every frame from
	// it on is held, with no break in Nomad's stream after it.
	floor   uint64
	changed chan struct{}
	readers map[*Reader]struct{}
}

// NewHistory returns an empty History.
func NewHistory(o HistoryOptions) *History {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxFrameBytes <= 0 {
		o.MaxFrameBytes = DefaultMaxFrameBytes
	}
	o.MaxFrameBytes = min(o.MaxFrameBytes, o.MaxBytes)
	if o.MaxBacklog <= 0 {
		o.MaxBacklog = max(o.MaxBytes/4, o.MaxFrameBytes)
	}
	return &History{opts: o, changed: make(chan struct{}), readers: map[*Reader]struct{}{}}
}

// Floor is the lowest index a subscriber can resume from exactly; 0 when
// nothing was lost yet.
func (h *History) Floor() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.floor
}

// Len returns the number of frames and bytes held.
func (h *History) Len() (frames, bytes int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.entries), h.bytes
}

// Add appends a frame (line without its newline, copied). A frame over
// MaxFrameBytes is not kept and counts as a break (Break). Readers that
// lag more than MaxBacklog are cut off.
func (h *History) Add(index uint64, line []byte) {
	if len(line)+1 > h.opts.MaxFrameBytes {
		h.Break(index + 1)
		return
	}
	b := make([]byte, len(line)+1)
	copy(b, line)
	b[len(line)] = '\n'
	h.mu.Lock()
	defer h.mu.Unlock()
	h.total += uint64(len(b))
	h.entries = append(h.entries, entry{seq: h.nextSeq, index: index, line: b, end: h.total})
	h.nextSeq++
	h.bytes += len(b)
	for h.bytes > h.opts.MaxBytes {
		old := h.entries[0]
		h.entries[0] = entry{}
		h.entries = h.entries[1:]
		h.bytes -= len(old.line)
		// The dropped frame's index is no longer resumable exactly; when
		// the next frame shares it (a split index), neither is it.
		h.floor = max(h.floor, old.index+1)
	}
	for r := range h.readers {
		if h.total-r.pos > uint64(h.opts.MaxBacklog) {
			h.cutLocked(r, ErrSlow)
		}
	}
	close(h.changed)
	h.changed = make(chan struct{})
}

// Break records a break in Nomad's stream (a gap, a reset, a skipped
// frame): the frames before it are dropped, so that no subscriber resumes
// across it as if it were continuous, and every reader is cut off so that
// it resumes and its client sees the break. next is the lowest index a
// resume is exact from afterwards.
func (h *History) Break(next uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	clear(h.entries)
	h.entries = h.entries[:0]
	h.bytes = 0
	h.floor = next
	for r := range h.readers {
		h.cutLocked(r, ErrBreak)
	}
	close(h.changed)
	h.changed = make(chan struct{})
}

// ErrSlow cuts off a reader that lagged more than MaxBacklog bytes.
var ErrSlow = errors.New("relay: subscriber too slow: its backlog exceeded the bound")

// ErrBreak cuts off readers at a break in Nomad's stream.
var ErrBreak = errors.New("relay: break in Nomad's stream: resubscribe")

func (h *History) cutLocked(r *Reader, err error) {
	delete(h.readers, r)
	r.err = err
	if r.onCut != nil {
		go r.onCut()
	}
}

// Reader reads a History from one position on.
type Reader struct {
	h     *History
	seq   uint64 // next entry to read
	pos   uint64 // bytes read (History.total at seq)
	err   error  // set under h.mu when cut off
	onCut func()
}

// NewReader returns a Reader starting where a Nomad subscription at
// index (inclusive) starts: at index, or the next index held above it;
// index 0 or one below the oldest held: the oldest; above everything: the
// newest index held. An index below Floor starts at Floor or above, so
// the first frame read is above index and the client sees a gap. onCut,
// if set, is called (on its own goroutine) when the reader is cut off.
func (h *History) NewReader(index uint64, onCut func()) *Reader {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := &Reader{h: h, seq: h.nextSeq, pos: h.total, onCut: onCut}
	if index < h.floor {
		index = h.floor
	}
	start := -1
	for i, e := range h.entries {
		if e.index < h.floor {
			continue
		}
		if start < 0 && (index == 0 || e.index >= index) {
			start = i
			break
		}
	}
	if start < 0 && len(h.entries) > 0 && index > h.entries[len(h.entries)-1].index {
		last := h.entries[len(h.entries)-1].index
		start = len(h.entries) - 1
		for start > 0 && h.entries[start-1].index == last {
			start--
		}
	}
	if start >= 0 {
		e := h.entries[start]
		r.seq, r.pos = e.seq, e.end-uint64(len(e.line))
	}
	h.readers[r] = struct{}{}
	return r
}

// Next appends the frames not read yet to buf (each with its newline) and
// returns it, with a channel closed when more may come. It returns the
// error the reader was cut off with, if it was.
func (r *Reader) Next(buf [][]byte) ([][]byte, <-chan struct{}, error) {
	h := r.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.err != nil {
		return buf, nil, r.err
	}
	if len(h.entries) > 0 && r.seq < h.entries[0].seq {
		h.cutLocked(r, ErrSlow) // what it had not read was dropped
		return buf, nil, r.err
	}
	i := 0
	if len(h.entries) > 0 {
		i = int(r.seq - h.entries[0].seq)
	}
	for ; i < len(h.entries); i++ {
		buf = append(buf, h.entries[i].line)
		r.seq, r.pos = h.entries[i].seq+1, h.entries[i].end
	}
	return buf, h.changed, nil
}

// Close stops the reader.
func (r *Reader) Close() {
	r.h.mu.Lock()
	delete(r.h.readers, r)
	r.h.mu.Unlock()
}

// Cut cuts every reader off with err, keeping the frames: their clients
// resume (elsewhere, or here later) exactly.
func (h *History) Cut(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for r := range h.readers {
		h.cutLocked(r, err)
	}
}
