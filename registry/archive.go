package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/client"
)

// ArchiveOptions bounds a save or a load: the Engine streams both, and
// neither has an HTTP timeout of its own.
type ArchiveOptions struct {
	// StallTimeout cancels the call when its stream has been silent that
	// long: a save whose archive stopped coming, a load whose request body
	// the Engine stopped reading. Zero disables the watchdog.
	StallTimeout time.Duration
	// QuietTimeout bounds the Engine's silent stretch that no stream
	// progress shows: before a save's first byte (Docker 20.10 stages the
	// whole archive in its temp directory first), and after a load's last
	// byte was read (the containerd image store unpacks then). Zero means
	// no bound but the caller's context.
	QuietTimeout time.Duration
}

// watchdog cancels ctx with a *StalledError when kick has not been called
// for stall, or with a *QuietError when quiet is armed and runs out.
type watchdog struct {
	cancel context.CancelCauseFunc
	stall  time.Duration
	mu     sync.Mutex
	timer  *time.Timer
}

// QuietError is why a save or a load was cancelled while the Engine worked
// without a word: its QuietTimeout ran out.
type QuietError struct {
	What  string // "the first byte of the save", ...
	After time.Duration
}

func (e *QuietError) Error() string {
	return fmt.Sprintf("no answer within %s waiting for %s, cancelled", e.After, e.What)
}

func newWatchdog(ctx context.Context, stall time.Duration) (context.Context, *watchdog) {
	ctx, cancel := context.WithCancelCause(ctx)
	return ctx, &watchdog{cancel: cancel, stall: stall}
}

// arm (re)starts the timer: after d, cancel with cause. d <= 0 disarms.
func (w *watchdog) arm(d time.Duration, cause error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	if d > 0 {
		w.timer = time.AfterFunc(d, func() { w.cancel(cause) })
	}
}

// kick says the stream moved: the stall timer starts over.
func (w *watchdog) kick() {
	w.arm(w.stall, &StalledError{After: w.stall})
}

func (w *watchdog) stop() {
	w.arm(0, nil)
	w.cancel(nil)
}

// Save streams the Engine's `docker save` archive of ids (image IDs, so that
// the archive names no tag and loading it tags nothing). The caller reads it
// to its end and closes it. The wait for the first byte is bounded by
// opts.QuietTimeout, each later silence by opts.StallTimeout: a read then
// fails with the *QuietError or *StalledError saying so.
func (e *Engine) Save(ctx context.Context, ids []string, opts ArchiveOptions) (io.ReadCloser, error) {
	ctx, w := newWatchdog(ctx, opts.StallTimeout)
	w.arm(opts.QuietTimeout, &QuietError{What: "the first byte of the save", After: opts.QuietTimeout})
	rc, err := e.cli.ImageSave(ctx, ids)
	if err != nil {
		err = causeOf(ctx, err)
		w.stop()
		return nil, fmt.Errorf("saving %d image(s): %w", len(ids), err)
	}
	w.kick()
	return &saveStream{ctx: ctx, rc: rc, w: w}, nil
}

type saveStream struct {
	ctx context.Context
	rc  io.ReadCloser
	w   *watchdog
}

func (s *saveStream) Read(p []byte) (int, error) {
	n, err := s.rc.Read(p)
	if n > 0 {
		s.w.kick()
	}
	if err != nil && err != io.EOF {
		err = fmt.Errorf("reading the Engine's save stream: %w", causeOf(s.ctx, err))
	}
	return n, err
}

func (s *saveStream) Close() error {
	s.w.stop()
	return s.rc.Close()
}

// causeOf replaces a cancellation by its cause (the watchdog's, or the
// caller's deadline).
func causeOf(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil {
		return cause
	}
	return err
}

// LoadResult is what the Engine said it loaded.
type LoadResult struct {
	// IDs are the images loaded without a name ("Loaded image ID: ..."):
	// on the classic image store their config digests, on the containerd
	// image store their manifest or index digests.
	IDs []string
	// Names are the references a load tagged ("Loaded image: ..."): an
	// archive whose manifest names tags.
	Names []string
}

// Load sends the `docker save` archive read from archive to the Engine and
// returns only when the Engine's answer has ended. It fails when the
// answer carries an error (the Engine answers 200 and reports a truncated
// or corrupt archive inside its stream, as a pull does), when the Engine
// stops reading the archive for opts.StallTimeout, and when it stays silent
// for opts.QuietTimeout after the archive's last byte. progress, when not
// nil, is told how many bytes the Engine has read so far.
func (e *Engine) Load(ctx context.Context, archive io.Reader, opts ArchiveOptions, progress func(int64)) (LoadResult, error) {
	ctx, w := newWatchdog(ctx, opts.StallTimeout)
	defer w.stop()
	w.kick()
	body := &loadBody{r: archive, w: w, progress: progress, quiet: opts.QuietTimeout}
	resp, err := e.cli.ImageLoad(ctx, body, client.ImageLoadWithQuiet(false))
	if err != nil {
		return LoadResult{}, fmt.Errorf("loading an archive: %w", causeOf(ctx, err))
	}
	defer resp.Close()
	res, err := readLoad(resp, w, body)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return res, fmt.Errorf("loading an archive: %w", causeOf(ctx, err))
	}
	return res, nil
}

// loadBody is the archive as the Engine reads it: each read kicks the
// watchdog, and its end hands over to the quiet timeout.
type loadBody struct {
	r        io.Reader
	w        *watchdog
	progress func(int64)
	quiet    time.Duration

	mu   sync.Mutex
	n    int64
	done bool
}

func (b *loadBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.mu.Lock()
	b.n += int64(n)
	total, finished := b.n, err == io.EOF && !b.done
	if finished {
		b.done = true
	}
	b.mu.Unlock()
	switch {
	case finished:
		b.w.arm(b.quiet, &QuietError{What: "the Engine to finish the load after reading the whole archive", After: b.quiet})
	case n > 0:
		b.w.kick()
	}
	if n > 0 && b.progress != nil {
		b.progress(total)
	}
	return n, err
}

func (b *loadBody) finished() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.done
}

// loadMessage is one message of the load's answer.
type loadMessage struct {
	Stream      string `json:"stream"`
	Status      string `json:"status"`
	Error       string `json:"error"`
	ErrorDetail *struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
}

// readLoad drains the load's answer: progress keeps the watchdog quiet
// while the archive is still being sent, "Loaded image" lines are
// collected, and an error message is the load's failure.
func readLoad(r io.Reader, w *watchdog, body *loadBody) (LoadResult, error) {
	var res LoadResult
	dec := json.NewDecoder(r)
	for {
		var m loadMessage
		err := dec.Decode(&m)
		if err == io.EOF {
			return res, nil
		}
		if err != nil {
			return res, fmt.Errorf("reading the load's answer: %w", err)
		}
		if !body.finished() {
			w.kick()
		}
		switch {
		case m.ErrorDetail != nil && m.ErrorDetail.Message != "":
			return res, errors.New(m.ErrorDetail.Message)
		case m.Error != "":
			return res, errors.New(m.Error)
		}
		for line := range strings.Lines(m.Stream) {
			line = strings.TrimSpace(line)
			if id, ok := strings.CutPrefix(line, "Loaded image ID: "); ok {
				res.IDs = append(res.IDs, id)
			} else if name, ok := strings.CutPrefix(line, "Loaded image: "); ok {
				res.Names = append(res.Names, name)
			}
		}
	}
}
