package watch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// File watches the file at path by watching its parent directory and matching
// the file's base name, so that a rename over it, a delete then create, a
// write in place and a chmod are all seen, and the watch survives the file
// being replaced or missing for a while. If path is a symlink, an event in the
// directory that changes where path resolves to is a change too (a Kubernetes
// ConfigMap's ..data swap).
//
// It calls changed once per burst of such events, debounced by d (zero fields
// take the defaults), until ctx is done; then it returns nil. A burst still
// pending then is dropped. changed is called from File's goroutine, one call at
// a time; events arriving meanwhile wait in the kernel's queue and form the
// next burst. File starts no goroutine of its own beyond the watcher's reader,
// and stops that before it returns.
//
// The argument to changed is nil, unless the watcher reported an error during
// the burst (typically fsnotify.ErrEventOverflow: events were lost); then it
// is that error, and the caller should re-read the file all the same. File
// logs nothing.
//
// File returns an error naming the directory if the directory can't be
// watched at start (it is missing, or path is a directory), and later if the
// directory itself is removed or renamed, since nothing can be seen after that.
func File(ctx context.Context, path string, d Debounce, changed func(err error)) error {
	w, err := Start(path)
	if err != nil {
		return err
	}
	return w.Run(ctx, d, changed)
}

// watcher is one watched directory and the name being matched in it.
type watcher struct {
	path   string // as given, cleaned
	dir    string // filepath.Dir(path)
	base   string // filepath.Base(path)
	target string // where path resolved to at the latest event; "" if it didn't

	events <-chan fsnotify.Event
	errs   <-chan error
	close  func() error // stops the watcher's reader goroutine and waits for it
}

// newWatcher starts watching path's directory. Changes made after it returns
// are seen.
func newWatcher(path string) (*watcher, error) {
	path = filepath.Clean(path)
	w := &watcher{path: path, dir: filepath.Dir(path), base: filepath.Base(path)}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("watching %q: is a directory, not a file", path)
	}
	fs, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watching directory %q: %w", w.dir, err)
	}
	if err := fs.Add(w.dir); err != nil {
		fs.Close()
		return nil, fmt.Errorf("watching directory %q: %w", w.dir, err)
	}
	w.events, w.errs, w.close = fs.Events, fs.Errors, fs.Close
	w.target = w.resolve()
	return w, nil
}

// errDirectoryGone is why run stops when the watched directory goes away.
var errDirectoryGone = errors.New("directory was removed or renamed")

// run is File's loop, on a watcher already watching.
func (w *watcher) run(ctx context.Context, d Debounce, changed func(err error)) error {
	d = d.withDefaults()
	var (
		b     burst
		timer = time.NewTimer(time.Hour)
		fire  <-chan time.Time // timer.C while a burst is pending, else nil
	)
	timer.Stop()
	defer timer.Stop()
	change := func(err error) {
		b.add(time.Now(), err)
		// Since Go 1.23 a Reset timer never delivers a value from before
		// the Reset, so the next receive on fire is this deadline.
		timer.Reset(time.Until(b.due(d)))
		fire = timer.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.events:
			if !ok {
				return fmt.Errorf("watching directory %q: watcher closed", w.dir)
			}
			if filepath.Clean(e.Name) == w.dir && e.Has(fsnotify.Remove|fsnotify.Rename) {
				return fmt.Errorf("watching directory %q: %w", w.dir, errDirectoryGone)
			}
			if w.touches(e) {
				change(nil)
			}
		case err, ok := <-w.errs:
			if !ok {
				return fmt.Errorf("watching directory %q: watcher closed", w.dir)
			}
			change(fmt.Errorf("watching directory %q: %w", w.dir, err))
		case <-fire:
			err := b.err()
			b, fire = burst{}, nil
			changed(err)
		}
	}
}

// touches reports whether e is a change to the watched file: an event for its
// name, or any event after which the path resolves somewhere else than it did.
func (w *watcher) touches(e fsnotify.Event) bool {
	target := w.resolve()
	moved := target != w.target
	w.target = target
	return moved || filepath.Base(e.Name) == w.base
}

// resolve is where path leads through any symlinks, or "" if nowhere.
func (w *watcher) resolve() string {
	target, err := filepath.EvalSymlinks(w.path)
	if err != nil {
		return ""
	}
	return target
}

// Watcher is a watch started by Start and run by Run: the split lets a
// caller start watching a file before it first reads it, so that a change
// landing between the read and the watch is never missed.
type Watcher struct {
	w         *watcher
	closeOnce sync.Once
	closeErr  error
}

// Start starts watching the file at path (see File): every change made
// after Start returns is reported by Run.
func Start(path string) (*Watcher, error) {
	w, err := newWatcher(path)
	if err != nil {
		return nil, err
	}
	return &Watcher{w: w}, nil
}

// Run reports changes as File does, until ctx is done, and stops the watch
// when it returns.
func (w *Watcher) Run(ctx context.Context, d Debounce, changed func(err error)) error {
	defer w.Close()
	return w.w.run(ctx, d, changed)
}

// Close stops the watch; it may be called more than once, and after Run.
func (w *Watcher) Close() error {
	w.closeOnce.Do(func() { w.closeErr = w.w.close() })
	return w.closeErr
}
