package nomad

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/backoff"
)

// Newest, as a start index, asks Nomad for the newest frame it buffers: an
// index above everything buffered starts there (docs/eventlog.md),
// so a fresh start prints one old frame rather than replaying a hundred.
// It is MaxInt64 rather than MaxUint64 so that it parses as either.
const Newest uint64 = math.MaxInt64

// Position is where a Streamer starts.
type Position struct {
	Index uint64
	// Written says Index is the last frame already written (a resume from a
	// state file). Nomad is asked for it again: when it comes back first it is
	// dropped, a higher first index is reported as a gap and a lower one as a
	// rebuilt history. Otherwise the stream simply starts at Index, inclusive.
	Written bool
	// Frames is how many frames at Index were written (Nomad may send one
	// index's events in several frames): a resume drops that many and writes
	// the rest. 0 means every frame at Index was written.
	Frames int
}

// Config tunes a Streamer. Zero values take the defaults.
type Config struct {
	Subscription

	// HeartbeatTimeout: a connection that delivers no byte for this long is
	// dead, whatever TCP says (Nomad sends `{}` every 30 s). 0 disables it.
	HeartbeatTimeout time.Duration
	// MaxFrameBytes bounds one line of the stream (default 64 MiB), and so
	// the memory one frame may take. A longer frame is skipped: read to its
	// end without being kept, logged at ERROR, counted in Stats, and the
	// stream goes on after its index.
	MaxFrameBytes int
	// ReadBufferSize is the stream's read buffer (default 64 KiB): what one
	// read of the connection takes at most. A busy stream is read in reads
	// this big, and a Handler's Idle comes once per read: eventlog's 1 MiB
	// makes its writes to stdout that big too (docs/BENCHMARKS.md). A
	// frame longer than it is read in pieces (MaxFrameBytes bounds it).
	ReadBufferSize int
	Backoff        backoff.Policy // default DefaultBackoff
	RefusedBackoff backoff.Policy // default RefusedBackoff
	// AlertAfter: an outage is logged again at ERROR each time it has lasted
	// another AlertAfter (default 6h).
	AlertAfter time.Duration
	// Locate, if set, names fields whose strings each Event carries the
	// place of (Event.Strings), found in the pass that validates the frame.
	Locate *Locator

	Logger *slog.Logger // default: discard
	Stats  *Stats       // default: a private one

	// Injectable for tests.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	Rand  func() float64
}

// Streamer follows Nomad's event stream and hands its events to a Handler,
// resuming after every drop without loss or repetition: Lines writes them
// one per line (eventlog), discovery decodes them. Its Run method is not
// safe for concurrent use; Stats may be read at any time.
type Streamer struct {
	client *Client
	cfg    Config
	log    *slog.Logger
	stats  *Stats
	outage outage

	// Owned by Run.
	h       Handler
	fh      FrameHandler // h, when it is one
	parser  frameParser
	lines   *lineReader
	compact bytes.Buffer
	strs    []Span               // the current event's Event.Strings
	r       resumeState          // where the frames handed over end
	topics  map[string]topicStat // by name: see topic
	seed    maphash.Seed
	hashes  map[uint64][]int
}

// NewStreamer returns a Streamer reading through client.
func NewStreamer(client *Client, cfg Config) *Streamer {
	if cfg.MaxFrameBytes <= 0 {
		cfg.MaxFrameBytes = 64 << 20
	}
	if cfg.ReadBufferSize <= 0 {
		cfg.ReadBufferSize = 64 << 10
	}
	if cfg.Backoff == (backoff.Policy{}) {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.RefusedBackoff == (backoff.Policy{}) {
		cfg.RefusedBackoff = RefusedBackoff
	}
	if cfg.AlertAfter <= 0 {
		cfg.AlertAfter = 6 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Stats == nil {
		cfg.Stats = new(Stats)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = backoff.Sleep
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	return &Streamer{
		client: client,
		cfg:    cfg,
		log:    cfg.Logger,
		stats:  cfg.Stats,
		outage: outage{log: cfg.Logger, now: cfg.Now, alertAfter: cfg.AlertAfter, stats: cfg.Stats},
		parser: frameParser{loc: cfg.Locate},
		topics: map[string]topicStat{},
		seed:   maphash.MakeSeed(),
	}
}

// Stats returns the Streamer's counters.
func (s *Streamer) Stats() *Stats { return s.stats }

// Run follows the stream from start, handing it to h, until ctx is done;
// then it calls h.Idle a last time and returns nil. It returns early only
// with an error of h's.
func (s *Streamer) Run(ctx context.Context, h Handler, start Position) error {
	s.h = h
	s.fh, _ = h.(FrameHandler)
	s.lines = newLineReader(s.cfg.ReadBufferSize, s.cfg.MaxFrameBytes)
	s.r = resumeState{last: start.Index, known: start.Written}
	if s.r.known {
		s.r.atLast = max(start.Frames, 0)
		s.stats.lastIndex.Store(s.r.last)
		s.stats.setFlushed(s.r.position())
	}
	attempt := 0
	for sessions := 0; ; sessions++ {
		if sessions > 0 {
			s.stats.reconnects.Add(1)
		}
		index := start.Index
		if s.r.known {
			index = s.r.last
		}
		live, err := s.session(ctx, index)
		if ierr := s.idle(); ierr != nil {
			return ierr
		}
		var herr *handlerError
		if errors.As(err, &herr) {
			return herr.err
		}
		if ctx.Err() != nil {
			return nil
		}
		h.Down(err)
		if live {
			attempt = 0
		}
		attempt++
		refused := isRefused(err)
		b := s.cfg.Backoff
		if refused {
			b = s.cfg.RefusedBackoff
			s.stats.refusals.Add(1)
		}
		delay := b.Delay(attempt, s.cfg.Rand())
		s.outage.failed(err, refused, attempt, delay)
		if s.cfg.Sleep(ctx, delay) != nil {
			return nil
		}
	}
}

var errHeartbeat = errors.New("heartbeat timeout")

// RefusedError: Nomad would not serve the subscription. Retrying soon will
// not help; a longer backoff applies.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return e.Reason }

// ClosedError: Nomad ended a live subscription. Text is the plain-text
// reason older servers (≤ 1.11.1) append to the stream, if any, and Meaning
// what it means when it is a known one.
type ClosedError struct{ Text, Meaning string }

func (e *ClosedError) Error() string {
	switch {
	case e.Text == "":
		return "Nomad closed the stream (server shutdown, leadership change, token or ACL change, or this reader fell more than the buffer behind)"
	case e.Meaning == "":
		return fmt.Sprintf("Nomad closed the stream: %q", e.Text)
	}
	return fmt.Sprintf("Nomad closed the stream: %q: %s", e.Text, e.Meaning)
}

// legacyTails are the texts older servers end a stream with, and what they mean.
var legacyTails = []struct {
	prefix  string
	meaning string
	refused bool
}{
	{"subscription closed by server", "the server ended the subscription (token or ACL change, leadership change); resubscribing", false},
	{"ACL token expired", "the token expired; reading it again and resubscribing", true},
	{"event dropped from buffer", "this reader fell too far behind and Nomad dropped its subscription; resuming, a gap will be reported if events were lost", false},
	{"Permission denied", "the token may not read the requested topics or namespace", true},
}

func tailError(text string) error {
	for _, t := range legacyTails {
		if strings.HasPrefix(text, t.prefix) {
			msg := fmt.Sprintf("Nomad closed the stream: %q: %s", text, t.meaning)
			if t.refused {
				return &RefusedError{Reason: msg}
			}
			return &ClosedError{Text: text, Meaning: t.meaning}
		}
	}
	return &ClosedError{Text: text}
}

func isRefused(err error) bool {
	var r *RefusedError
	if errors.As(err, &r) {
		return true
	}
	var h *HTTPError
	if errors.As(err, &h) {
		switch h.Status {
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed:
			return true
		}
	}
	return false
}

// netReader is the stream's body as the line reader sees it: before blocking
// on the network it tells the Handler the stream is idle (so events show up
// as soon as the stream goes quiet, and a busy stream costs one write per
// read), and it arms
// the heartbeat timer only while waiting for the network, never while the
// output is blocked.
type netReader struct {
	s       *Streamer
	body    io.Reader
	timer   *time.Timer
	timeout time.Duration
	werr    error
}

func (r *netReader) Read(p []byte) (int, error) {
	if err := r.s.idle(); err != nil {
		r.werr = err
		return 0, err
	}
	if r.timer != nil {
		r.timer.Reset(r.timeout)
	}
	n, err := r.body.Read(p)
	if r.timer != nil {
		r.timer.Stop()
	}
	r.s.stats.bytesRead.Add(uint64(n))
	return n, err
}

// session runs one subscription until it ends. live reports whether Nomad
// accepted it (its first `{}` arrived).
func (s *Streamer) session(ctx context.Context, index uint64) (live bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer func() {
		if live {
			s.stats.live.Store(false)
			s.stats.downSince.Store(s.cfg.Now().UnixNano())
		}
	}()
	var timer *time.Timer
	if d := s.cfg.HeartbeatTimeout; d > 0 {
		timer = time.AfterFunc(d, func() { cancel(errHeartbeat) })
		defer timer.Stop()
	}
	body, err := s.client.open(ctx, s.cfg.Subscription, index)
	if timer != nil {
		timer.Stop()
	}
	if err != nil {
		if context.Cause(ctx) == errHeartbeat {
			return false, fmt.Errorf("subscribing: no answer within %s", s.cfg.HeartbeatTimeout)
		}
		var h *HTTPError
		if errors.As(err, &h) {
			return false, err
		}
		return false, fmt.Errorf("subscribing: %w", err)
	}
	defer body.Close()
	s.log.Debug("subscribing", "index", index)
	nr := &netReader{s: s, body: body, timer: timer, timeout: s.cfg.HeartbeatTimeout}
	s.lines.reset(nr)
	defer s.lines.reset(nil)

	first := true // no frame yet in this session
	for {
		line, rerr := s.lines.next()
		var big *frameTooLarge
		if errors.As(rerr, &big) {
			if err := s.skip(big, &first); err != nil {
				return live, err
			}
			if big.err == nil {
				continue
			}
			line, rerr = nil, big.err
		}
		if rerr == nil {
			if err := s.line(line, &live, &first); err != nil {
				return live, err
			}
			continue
		}
		if nr.werr != nil {
			return live, nr.werr
		}
		err = s.ended(ctx, line, rerr, &live, &first)
		return live, err
	}
}

// ended handles the end of a session's stream, which rerr ended: the last
// line, if it came without its newline, then the error saying why the
// stream ended.
func (s *Streamer) ended(ctx context.Context, line []byte, rerr error, live, first *bool) error {
	if len(bytes.TrimSpace(line)) > 0 {
		// A last line without its newline: a whole frame (the server
		// writes a frame and its newline separately, and the cut fell
		// between them), a frame cut short, or an older server's error.
		switch perr := s.parser.parse(line); {
		case perr == nil:
			if err := s.line(line, live, first); err != nil {
				return err
			}
		case perr == errNotJSON:
			return tailError(string(bytes.TrimSpace(line)))
		default:
			s.log.Debug("stream cut in the middle of a frame", "bytes", len(line))
		}
	}
	// Nomad answers a subscription it refuses (no token, an unknown one, a
	// policy without read on the topic) with 200 and then nothing, not even
	// the `{}` it sends within milliseconds of accepting one, and closes
	// the connection about 30 s later (recorded from Nomad 2.0.5). So a
	// stream that ends, or stays silent past the heartbeat bound, before its
	// first `{}` was refused, not cut.
	const why = "(check the token, that its ACL policy may read the requested topics and namespace, and that the event broker is enabled)"
	switch {
	case context.Cause(ctx) == errHeartbeat && !*live:
		return &RefusedError{Reason: fmt.Sprintf("Nomad answered but sent nothing, not even a heartbeat, for %s: "+
			"the subscription was refused or the token has no permission %s", s.cfg.HeartbeatTimeout, why)}
	case context.Cause(ctx) == errHeartbeat:
		return fmt.Errorf("no frame and no heartbeat for %s: the connection is dead", s.cfg.HeartbeatTimeout)
	case ctx.Err() != nil:
		return ctx.Err()
	case rerr == io.EOF && !*live:
		return &RefusedError{Reason: "Nomad closed the stream before its first heartbeat: " +
			"the subscription was refused or the token has no permission " + why}
	case rerr == io.EOF:
		return &ClosedError{}
	}
	return fmt.Errorf("reading the stream: %w", rerr)
}

// line handles one line of the stream.
func (s *Streamer) line(line []byte, live, first *bool) error {
	if len(line) == 0 {
		return nil
	}
	if err := s.parser.parse(line); err != nil {
		if err == errNotJSON {
			if t := bytes.TrimSpace(line); len(t) > 0 {
				return tailError(string(t))
			}
			return nil
		}
		return fmt.Errorf("reading the stream: invalid frame: %w", err)
	}
	if !*live {
		*live = true
		s.stats.live.Store(true)
		s.stats.downSince.Store(0)
		s.outage.recovered()
		s.h.Up()
	}
	if s.parser.heartbeat {
		s.stats.heartbeats.Add(1)
		return nil
	}
	wasFirst := *first
	*first = false
	return s.frame(line, wasFirst)
}

// admit applies the resume rules (resume) to the frame at idx, logs and
// counts what they find, tells the Handler of a gap or a history reset, and
// says whether the frame is new.
func (s *Streamer) admit(idx uint64, first bool) (bool, error) {
	last := s.r.last
	v, r := resume(s.r, idx, first)
	s.r = r
	switch v {
	case repeated:
		if first {
			s.log.Debug("resumed without a gap", "index", idx)
		}
	case gap:
		s.stats.gaps.Add(1)
		s.log.Warn("gap in the event stream: Nomad no longer buffered the last written index, events between the two indexes (exclusive) may be lost",
			"last_written", last, "first_received", idx)
		return true, s.discontinuity(Discontinuity{Kind: Gap, Last: last, Next: idx})
	case reset:
		s.stats.resets.Add(1)
		s.log.Warn("Nomad's event history went backwards (cluster rebuilt or restored from a snapshot?): carrying on from the new history",
			"last_written", last, "first_received", idx)
		return true, s.discontinuity(Discontinuity{Kind: Reset, Last: last, Next: idx})
	case disorder:
		s.log.Warn("frame out of order within a subscription: dropped", "index", idx, "last_written", last)
	}
	return v.admitted(), nil
}

func (s *Streamer) discontinuity(d Discontinuity) error {
	if err := s.h.Discontinuity(d); err != nil {
		return &handlerError{err}
	}
	return nil
}

// handed records that a frame at idx was handed over (or skipped as too
// large): the resume position moves to it.
func (s *Streamer) handed(idx uint64) {
	s.r = s.r.handed(idx)
	s.stats.lastIndex.Store(idx)
}

// skip reports a frame over MaxFrameBytes and moves the resume index past
// it, so that a resume does not read it again: Nomad sends it first, as the
// frame at the resume index, and admit drops it.
//
// A frame cut off by the end of the stream before its index was read is not
// skipped: the resume asks for it again, and it is judged whole then (Nomad
// writes the index last, so a cut frame's index is rarely known).
func (s *Streamer) skip(big *frameTooLarge, first *bool) error {
	s.stats.lastFrame.Store(s.cfg.Now().UnixNano())
	if !big.indexOK && big.err != nil {
		s.log.Debug("an oversize frame was cut off before its index: the resume reads it again", "bytes_read", big.read)
		return nil
	}
	wasFirst := *first
	*first = false
	last := s.r.last
	attrs := []any{"last_written", last}
	if !s.r.known {
		attrs, last = attrs[:0], 0
	}
	if big.indexOK {
		ok, err := s.admit(big.index, wasFirst)
		if !ok || err != nil {
			return err
		}
		attrs = append(attrs, "skipped_index", big.index)
	}
	if big.err == nil {
		attrs = append(attrs, "bytes", big.read-1)
	} else {
		attrs = append(attrs, "bytes_read", big.read) // the stream ended first
	}
	attrs = append(attrs, "max_frame_bytes", s.cfg.MaxFrameBytes)
	s.stats.skipped.Add(1)
	msg := "frame skipped: larger than the frame size limit, its events are lost; the stream goes on after it"
	if !big.indexOK {
		msg = "frame skipped: larger than the frame size limit, its events are lost, and its index could not be read; the stream goes on after it"
	}
	s.log.Error(msg, attrs...)
	d := Discontinuity{Kind: Skipped, Last: last}
	if big.indexOK {
		d.Next = big.index
		s.handed(big.index)
	}
	return s.discontinuity(d)
}

// frame hands over the events of one frame, applying the resume rules.
func (s *Streamer) frame(line []byte, first bool) error {
	idx := s.parser.index
	s.stats.lastFrame.Store(s.cfg.Now().UnixNano())
	if len(s.parser.events) == 0 {
		return nil // nothing written: the resume index stays where it is
	}
	if ok, err := s.admit(idx, first); !ok || err != nil {
		return err
	}
	written := 0
	for k, ev := range s.parser.events {
		raw := line[ev.start:ev.end]
		if s.repeated(line, k) {
			s.stats.duplicates.Add(1)
			continue
		}
		topic := s.topic(line[ev.topicStart:ev.topicEnd])
		s.strs = s.parser.spansOf(s.strs[:0], ev, topic.bit)
		if !ev.compact {
			s.compact.Reset()
			if err := json.Compact(&s.compact, raw); err != nil {
				return fmt.Errorf("reading the stream: invalid event: %w", err)
			}
			raw = s.compact.Bytes()
			if s.cfg.Locate != nil { // spans of the bytes as sent: find them again
				var err error
				if s.strs, err = s.cfg.Locate.Strings(s.strs[:0], topic.name, raw); err != nil {
					return fmt.Errorf("reading the stream: invalid event: %w", err)
				}
			}
		}
		if err := s.h.Event(Event{Index: idx, Topic: topic.name, Raw: raw, Strings: s.strs}); err != nil {
			return &handlerError{err}
		}
		topic.events.Add(1)
		written++
	}
	s.stats.events.Add(uint64(written))
	s.stats.frames.Add(1)
	s.handed(idx)
	if s.fh != nil {
		if err := s.fh.Frame(Frame{Index: idx, Raw: line}); err != nil {
			return &handlerError{err}
		}
	}
	return nil
}

// repeated reports whether event k of the frame repeats an earlier one (Nomad
// sends an event once per subscribed key it matches).
func (s *Streamer) repeated(line []byte, k int) bool {
	evs := s.parser.events
	raw := line[evs[k].start:evs[k].end]
	if len(evs) <= 16 {
		for _, e := range evs[:k] {
			if bytes.Equal(line[e.start:e.end], raw) {
				return true
			}
		}
		return false
	}
	if k == 0 {
		clear(s.hashes)
		if s.hashes == nil {
			s.hashes = map[uint64][]int{}
		}
	}
	h := maphash.Bytes(s.seed, raw)
	for _, j := range s.hashes[h] {
		if bytes.Equal(line[evs[j].start:evs[j].end], raw) {
			return true
		}
	}
	s.hashes[h] = append(s.hashes[h], k)
	return false
}

// topicStat is one topic's name, kept from one event to the next, and its
// event counter.
type topicStat struct {
	name   string
	events *atomic.Uint64
	bit    uint64 // its bit in Config.Locate, 0 when it names none of its fields
}

// topic returns the topic named b (a lookup by string(b) does not
// allocate); the map is bounded by the topics Nomad sends.
func (s *Streamer) topic(b []byte) topicStat {
	if t, ok := s.topics[string(b)]; ok {
		return t
	}
	name := string(b)
	t := topicStat{name: name, events: s.stats.topicCounter(name)}
	if s.cfg.Locate != nil {
		t.bit = s.cfg.Locate.topics[name]
	}
	s.topics[name] = t
	return t
}

// idle tells the Handler the stream is about to wait; every frame up to
// the resume position has then been handed over.
func (s *Streamer) idle() error {
	pos := s.r.position()
	if err := s.h.Idle(pos); err != nil {
		return &handlerError{err}
	}
	if pos.Written {
		s.stats.setFlushed(pos)
	}
	return nil
}
