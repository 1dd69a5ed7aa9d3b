package peer

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/bundle"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// Path is where an agent serves its images to its peers:
// GET /v1/peer/image?ref=EXPECTED[&digest=sha256:...].
const Path = "/v1/peer/image"

// IDHeader names, in a 200 answer, the image ID the transfer holds: the
// receiver loads it only if the loaded ID is that one.
const IDHeader = "X-Prefetch-Image-Id"

// Held is what an agent knows of one expected reference: whether it is one
// of its own expected images, its state and, when present, its image ID.
type Held struct {
	Expected bool
	State    string
	ImageID  string
}

// Engine is what a Server asks of the Docker Engine. *registry.Engine
// implements it.
type Engine interface {
	bundle.Saver
	Inspect(ctx context.Context, ref string) (registry.Image, error)
}

var _ Engine = (*registry.Engine)(nil)

// Answer is the JSON body of every answer but a transfer: why not, in
// words and in fields the asking agent branches on.
type Answer struct {
	// Expected is false when the reference is none of this agent's
	// expected images (it will never serve it).
	Expected bool `json:"expected"`
	// State is the image's state on this agent while it is not present
	// ("wanted", "pulling", "failed"): a peer that is getting it.
	State string `json:"state,omitempty"`
	Error string `json:"error"`
}

// Server serves this agent's expected, present images to its peers, each
// as a one-image bundle (bundle.Stream: the Engine's save of the image ID,
// and a manifest naming it), never anything else: no image the agent does
// not expect, none that is not present by the ID the agent holds for it.
type Server struct {
	// Held says what the agent holds for an expected reference (the loop's
	// snapshot).
	Held   func(ref string) Held
	Engine Engine
	// Authorize decides whether a request may be served, before anything
	// else is looked at: an error is a 403 with its text, or a 503 when it
	// wraps ErrUnavailable. nil refuses every request.
	Authorize func(*http.Request) error
	// MaxServing bounds the transfers served at once (at least 1); beyond
	// it: 429, and the peer tries another.
	MaxServing int
	// StallTimeout, read at each transfer, ends one whose peer has read
	// nothing for that long, and a save whose archive stopped coming (nil,
	// or 0: 2 min).
	StallTimeout func() time.Duration
	// Served, when set, is told the bytes of each transfer as they are
	// sent.
	Served func(bytes int64)
	// Count, when set, is told of each save run to serve peers (EventSave)
	// and of each transfer's end (EventWhole, EventFailed): fewer saves
	// than transfers is the peers that shared one.
	Count func(event string)
	Log   *slog.Logger

	once  sync.Once
	slots chan struct{} // one token per transfer being served
	held  atomic.Int32  // questions being held

	mu     sync.Mutex
	shares map[bundle.Entry]*share // the saves being served, by the entry their bundle is made of
	joined func(bundle.Entry)      // tests: told of each transfer once it is in a share
	behind time.Duration           // tests: the lag of a shared save, if not lag's
}

// maxHeld bounds the questions held at once: past it, they are answered at
// once (the asker comes back at its next round).
const maxHeld = 256

// ErrUnavailable marks an Authorize error that says the caller can't be
// checked now, rather than that it is refused.
var ErrUnavailable = errors.New("peer: callers can't be checked now")

// maxRef bounds the reference a request names.
const maxRef = 512

func answer(w http.ResponseWriter, code int, a Answer) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(a)
}

func (s *Server) stall() time.Duration {
	if s.StallTimeout != nil {
		if d := s.StallTimeout(); d > 0 {
			return d
		}
	}
	return 2 * time.Minute
}

// ServeHTTP serves one transfer, or says why not.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		answer(w, http.StatusMethodNotAllowed, Answer{Error: "peer: GET only"})
		return
	}
	if s.Authorize == nil {
		answer(w, http.StatusForbidden, Answer{Error: "peer: serving no one (no authorizer)"})
		return
	}
	if err := s.Authorize(r); err != nil {
		code := http.StatusForbidden
		if errors.Is(err, ErrUnavailable) {
			code = http.StatusServiceUnavailable
		}
		answer(w, code, Answer{Error: err.Error()})
		return
	}
	q := r.URL.Query()
	ref, dgst := q.Get("ref"), q.Get("digest")
	if ref == "" || len(ref) > maxRef || len(dgst) > 128 {
		answer(w, http.StatusBadRequest, Answer{Error: fmt.Sprintf("peer: want ref=EXPECTED (at most %d bytes) and optionally digest=sha256:...", maxRef)})
		return
	}
	h := s.Held(ref)
	var until time.Time // a held question waits for the image and a slot until then
	if hold, err := time.ParseDuration(q.Get("wait")); err == nil && hold > 0 {
		if s.held.Add(1) <= maxHeld {
			until = time.Now().Add(min(hold, MaxHold))
			h = s.hold(r.Context(), ref, h, until)
		}
		defer s.held.Add(-1)
	}
	switch {
	case !h.Expected:
		answer(w, http.StatusNotFound, Answer{Error: "peer: not one of this agent's expected images"})
		return
	case h.ImageID == "":
		answer(w, http.StatusNotFound, Answer{Expected: true, State: h.State, Error: "peer: expected here, not present (" + h.State + ")"})
		return
	}
	ctx := r.Context()
	im, err := s.Engine.Inspect(ctx, ref)
	switch {
	case errors.Is(err, registry.ErrNotFound), err == nil && im.ID != h.ImageID:
		answer(w, http.StatusNotFound, Answer{Expected: true, State: "changing", Error: "peer: the image changed here since it was last checked"})
		return
	case err != nil:
		answer(w, http.StatusServiceUnavailable, Answer{Expected: true, Error: "peer: Docker: " + err.Error()})
		return
	case dgst != "" && !im.HasDigest(dgst) && im.ID != dgst:
		answer(w, http.StatusNotFound, Answer{Expected: true, State: "other content", Error: "peer: this agent's image is not content " + dgst})
		return
	}
	if !s.take(r.Context(), until) {
		w.Header().Set("Retry-After", "1")
		answer(w, http.StatusTooManyRequests, Answer{Expected: true, State: StatePresent, Error: fmt.Sprintf("peer: serving %d transfers already; try another peer", s.MaxServing)})
		return
	}
	defer s.release()
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set(IDHeader, im.ID)
	w.WriteHeader(http.StatusOK)
	out := &deadlineWriter{rc: http.NewResponseController(w), w: w, stall: s.stall(), served: s.Served}
	// The answer goes out now: a peer that joins a save is sent nothing
	// until the save's next bytes.
	if err := out.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return
	}
	if err := s.serve(ctx, bundle.EntryFor(ref, ref, "", dgst, im), out); err != nil {
		// The receiver sees a cut archive and refuses it; the connection
		// is closed so that it does not wait for more.
		if s.Log != nil {
			s.Log.Warn("peer: a transfer failed", "image", ref, "peer", r.RemoteAddr, "sent", out.n, "error", err.Error())
		}
		s.count(EventFailed)
		panic(http.ErrAbortHandler)
	}
	s.count(EventWhole)
	if s.Log != nil {
		s.Log.Info("peer: served an image", "image", ref, "image_id", registry.ShortID(im.ID), "peer", r.RemoteAddr, "bytes", out.n)
	}
}

// serve writes entry's one-image bundle to out: it joins the save of the
// same bundle being written to other peers, if one has just begun, or
// begins one (see share).
func (s *Server) serve(ctx context.Context, entry bundle.Entry, out *deadlineWriter) error {
	s.mu.Lock()
	sh := s.shares[entry]
	var t *taker
	ok := false
	if sh != nil {
		t, ok = sh.join(out)
	}
	if !ok {
		sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		behind := s.behind
		if behind == 0 {
			behind = lag(out.stall)
		}
		sh = newShare(out.stall, behind, cancel)
		t, _ = sh.join(out)
		if s.shares == nil {
			s.shares = map[bundle.Entry]*share{}
		}
		s.shares[entry] = sh
		go s.save(sctx, entry, sh, out.stall)
	}
	s.mu.Unlock()
	if s.joined != nil {
		s.joined(entry)
	}
	return t.send(sh, ctx.Done())
}

// save runs the save of the bundle entry into its share, bounded by the
// stall_timeout read when the save began, and ends the share.
func (s *Server) save(ctx context.Context, entry bundle.Entry, sh *share, stall time.Duration) {
	defer sh.cancel()
	s.count(EventSave)
	buf := bufio.NewWriterSize(sh, 256<<10)
	_, err := bundle.Stream(ctx, s.Engine, buf, []bundle.Entry{entry}, bundle.WriteOptions{Archive: registry.ArchiveOptions{StallTimeout: stall, QuietTimeout: stall}})
	if err == nil {
		err = buf.Flush()
	}
	s.mu.Lock()
	if s.shares[entry] == sh {
		delete(s.shares, entry)
	}
	s.mu.Unlock()
	sh.finish(err)
}

// What Server.Count is told.
const (
	EventSave   = "save"
	EventWhole  = "whole"
	EventFailed = "failed"
)

func (s *Server) count(event string) {
	if s.Count != nil {
		s.Count(event)
	}
}

// MaxHold bounds how long a request with ?wait= is held while the image is
// being fetched here, and holdPoll how often the agent's state is looked
// at meanwhile (the snapshot, in memory).
const (
	MaxHold  = 10 * time.Second
	holdPoll = 100 * time.Millisecond
)

// hold waits, until then, for an expected image that this agent is fetching
// to be present, so that a peer waiting for it is answered as soon as it is
// rather than at its next round.
func (s *Server) hold(ctx context.Context, ref string, h Held, until time.Time) Held {
	if !h.Expected || h.ImageID != "" || h.State != "wanted" && h.State != "pulling" {
		return h
	}
	deadline := time.After(time.Until(until))
	for {
		// Every held question looks at the same moments (multiples of
		// holdPoll), so that the peers waiting for an image are answered
		// together and share its save.
		now := time.Now()
		t := time.NewTimer(now.Truncate(holdPoll).Add(holdPoll).Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			return h
		case <-deadline:
			t.Stop()
			return h
		case <-t.C:
		}
		if h = s.Held(ref); h.ImageID != "" || !h.Expected {
			return h
		}
	}
}

// StatePresent is what Answer.State says of an image present but not
// served now (every slot busy).
const StatePresent = "present"

// take takes a transfer slot: at once, or, for a held question, as one
// frees up before until (a peer waiting at the agent that has just got an
// image is served next, rather than sent round the others).
func (s *Server) take(ctx context.Context, until time.Time) bool {
	s.once.Do(func() { s.slots = make(chan struct{}, max(s.MaxServing, 1)) })
	select {
	case s.slots <- struct{}{}:
		return true
	default:
	}
	if d := time.Until(until); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case s.slots <- struct{}{}:
			return true
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return false
}

func (s *Server) release() { <-s.slots }

// deadlineWriter gives each write to the peer stall to complete, however
// long the whole transfer takes (the listener's write timeout is for the
// short status answers), and counts what was sent.
type deadlineWriter struct {
	rc     *http.ResponseController // nil: no deadline (tests)
	w      io.Writer
	stall  time.Duration
	n      int64
	served func(int64)
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	if d.rc != nil {
		if err := d.rc.SetWriteDeadline(time.Now().Add(d.stall)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return 0, err
		}
	}
	n, err := d.w.Write(p)
	d.n += int64(n)
	if d.served != nil && n > 0 {
		d.served(int64(n))
	}
	if err != nil {
		return n, fmt.Errorf("sending to the peer (%s sent): %w", strconv.FormatInt(d.n, 10), err)
	}
	return n, nil
}
