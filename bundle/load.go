package bundle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// Engine is what a Loader asks of the Docker Engine. *registry.Engine
// implements it.
type Engine interface {
	Load(ctx context.Context, archive io.Reader, opts registry.ArchiveOptions, progress func(int64)) (registry.LoadResult, error)
	Inspect(ctx context.Context, ref string) (registry.Image, error)
	// ImageIDs and Remove take out again what a refused load added: the
	// images that were not there before it.
	ImageIDs(ctx context.Context) (map[string]bool, error)
	Remove(ctx context.Context, id string) error
}

var _ Engine = (*registry.Engine)(nil)

// RetryFailedLoad is how long a bundle whose load the Engine refused is
// not loaded again while its file stays the same: the Engine's refusal is
// most often the file's fault (a corrupt layer), sometimes the node's (a
// full disk), so it is tried again, but not at every image's every retry.
const RetryFailedLoad = 5 * time.Minute

// Loader serves images from bundle files: the `bundle:` sources of a
// config, and `prefetch once -bundle`. A bundle is loaded into Docker once
// however many images come from it, and again only when its file changed
// (size, modification time or inode) or an image it served has since been
// removed from Docker (Nomad's image GC). Its methods may be called
// concurrently; calls for one file take turns.
type Loader struct {
	engine Engine
	log    *slog.Logger

	mu    sync.Mutex
	files map[string]*bundleFile
	now   func() time.Time
}

// NewLoader returns a Loader that loads through engine and logs each load
// to log.
func NewLoader(engine Engine, log *slog.Logger) *Loader {
	return &Loader{engine: engine, log: log, files: map[string]*bundleFile{}, now: time.Now}
}

// bundleFile is what the Loader knows of one file.
type bundleFile struct {
	turn  chan struct{} // held while the file is read or loaded
	loads int
	fileData
}

// proof is what proveDigest found for a digest.
type proof struct {
	ids []string
	err error
}

// fileData is what holds for the file in one state: reset when it changes.
type fileData struct {
	state    fileState
	manifest *Manifest
	verified map[string]string // expected → the ID the last load gave it
	fresh    map[string]bool   // the IDs the last load added to Docker
	proofs   map[string]proof  // digest → what the archive proves to be it
	err      error             // why the file in this state can't serve
	errUntil time.Time         // zero: until the file changes
}

type fileState struct {
	size  int64
	mtime time.Time
	ino   uint64
}

func statFile(path string) (fileState, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileState{}, err
	}
	st := fileState{size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
	}
	return st, nil
}

func (l *Loader) file(path string) *bundleFile {
	l.mu.Lock()
	defer l.mu.Unlock()
	bf := l.files[path]
	if bf == nil {
		bf = &bundleFile{turn: make(chan struct{}, 1)}
		l.files[path] = bf
	}
	return bf
}

// Loads returns how many times the bundle at path was loaded into Docker.
func (l *Loader) Loads(path string) int {
	bf := l.file(path)
	bf.turn <- struct{}{}
	defer func() { <-bf.turn }()
	return bf.loads
}

// Image makes the image the bundle at path holds for expected present in
// Docker and returns its ID, verified against the bundle's manifest (the
// ID the manifest names, and the Engine said it loaded). It tags nothing.
// With dgst set, the bundle must prove the image is that registry digest:
// its manifest records dgst, the archive holds the blob dgst, and the
// blob leads to the ID loaded (see proveDigest); an image whose pin the
// bundle only claims is refused before the load. Every error names the
// file and the image.
func (l *Loader) Image(ctx context.Context, path, expected, dgst string, opts registry.ArchiveOptions) (string, error) {
	id, err := l.image(ctx, path, expected, dgst, opts)
	if err != nil {
		return "", fmt.Errorf("loading %s from bundle %s: %w", expected, path, err)
	}
	return id, nil
}

func (l *Loader) image(ctx context.Context, path, expected, dgst string, opts registry.ArchiveOptions) (string, error) {
	bf := l.file(path)
	select {
	case bf.turn <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for another load of the bundle: %w", context.Cause(ctx))
	}
	defer func() { <-bf.turn }()

	st, err := statFile(path)
	if err != nil {
		return "", err
	}
	if st != bf.state {
		bf.fileData = fileData{state: st}
	}
	if bf.err != nil && (bf.errUntil.IsZero() || l.now().Before(bf.errUntil)) {
		return "", bf.err
	}
	bf.err = nil
	if bf.manifest == nil {
		if bf.manifest, err = Read(path); err != nil {
			bf.err = errors.Unwrap(err) // Read's error names the file, as Image's does
			return "", bf.err
		}
	}
	img, err := imageFor(bf.manifest, expected, dgst)
	if err != nil {
		return "", err
	}
	var proved []string
	if dgst != "" {
		if proved, err = l.prove(bf, path, dgst, img); err != nil {
			return "", err
		}
	}
	id, err := l.loaded(ctx, path, bf, expected, opts)
	if err != nil {
		return "", err
	}
	if dgst != "" && !slices.Contains(proved, id) {
		return "", unproven(dgst, fmt.Errorf("the Engine loaded it as %s, which blob %s does not lead to (it leads to %s)", id, dgst, strings.Join(proved, ", ")))
	}
	return id, nil
}

// loaded returns the ID the bundle's image for expected has in Docker,
// loading the bundle unless it was loaded and the image is still there.
func (l *Loader) loaded(ctx context.Context, path string, bf *bundleFile, expected string, opts registry.ArchiveOptions) (string, error) {
	if id, ok := bf.verified[expected]; ok {
		present, err := l.present(ctx, id)
		if err != nil || present {
			return id, err
		}
		l.log.Info("an image of the bundle was removed from Docker; loading the bundle again", "file", path, "image", expected, "image_id", id)
	}
	if err := l.load(ctx, path, bf, opts); err != nil {
		return "", err
	}
	return bf.verified[expected], nil
}

// prove returns the IDs the bundle proves to be dgst (see proveDigest),
// refusing, before any load, a bundle that proves none of img's IDs.
func (l *Loader) prove(bf *bundleFile, path, dgst string, img Image) ([]string, error) {
	p, ok := bf.proofs[dgst]
	if !ok {
		p.ids, p.err = proveDigest(path, dgst)
		if bf.proofs == nil {
			bf.proofs = map[string]proof{}
		}
		bf.proofs[dgst] = p
	}
	return proves(dgst, img, p.ids, p.err)
}

// proves refuses a pin whose proof (ids, or why none: err) proves none of
// img's IDs, and returns the IDs proven.
func proves(dgst string, img Image, ids []string, err error) ([]string, error) {
	if err != nil {
		return nil, unproven(dgst, err)
	}
	if !slices.ContainsFunc(img.IDs(), func(id string) bool { return slices.Contains(ids, id) }) {
		return nil, unproven(dgst, fmt.Errorf("blob %s leads to %s, and the bundle's image is %s", dgst, strings.Join(ids, ", "), img.describe()))
	}
	return ids, nil
}

// imageFor is m's image for expected, refused when the config pins a
// digest the bundle does not record for it.
func imageFor(m *Manifest, expected, dgst string) (Image, error) {
	img, ok := m.Find(expected)
	switch {
	case !ok:
		return Image{}, fmt.Errorf("the bundle holds no image for it (it holds %s)", strings.Join(m.Expected(), ", "))
	case dgst != "" && img.Digest != dgst:
		return Image{}, fmt.Errorf("the config pins digest %s, and the bundle records %s for it", dgst, orNone(img.Digest))
	}
	return img, nil
}

// UnprovenError is why a bundle does not serve an image whose config pins
// a digest: the bundle does not prove its image is that digest.
type UnprovenError struct {
	Digest string
	Err    error
}

func (e *UnprovenError) Error() string {
	return fmt.Sprintf("the config pins digest %s, and the pin is unproven: %v; nothing is tagged from this bundle for it", e.Digest, e.Err)
}

func (e *UnprovenError) Unwrap() error { return e.Err }

func unproven(dgst string, err error) error { return &UnprovenError{Digest: dgst, Err: err} }

func orNone(s string) string {
	if s == "" {
		return "no digest"
	}
	return s
}

// present reports whether the image id is in Docker.
func (l *Loader) present(ctx context.Context, id string) (bool, error) {
	im, err := l.engine.Inspect(ctx, id)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return im.ID == id, nil
}

// load loads the bundle and verifies what the Engine loaded against the
// manifest, recording the outcome in bf.
func (l *Loader) load(ctx context.Context, path string, bf *bundleFile, opts registry.ArchiveOptions) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	start := l.now()
	log := l.log.With("file", path)
	log.Info("loading bundle", "images", len(bf.manifest.Images), "size", FormatBytes(bf.state.size))
	prog := &loadProgress{log: log, total: bf.state.size, every: 5 * time.Second, next: start.Add(5 * time.Second)}
	before, err := l.engine.ImageIDs(ctx)
	if err != nil {
		return err
	}
	res, err := l.engine.Load(ctx, f, opts, prog.read)
	bf.fresh = added(before, res)
	if st, serr := statFile(path); serr != nil || st != bf.state {
		bf.manifest, bf.verified = nil, nil
		return errors.New("the file changed while it was loaded; it is read again at the next try")
	}
	if err != nil {
		if retryable(ctx, err) {
			return err
		}
		l.discardFresh(ctx, log, bf, nil) // what it loaded before it failed
		bf.err, bf.errUntil = fmt.Errorf("the Docker Engine refused it: %w (not loaded again before %s unless the file changes)", err, l.now().Add(RetryFailedLoad).UTC().Format(time.RFC3339)), l.now().Add(RetryFailedLoad)
		return bf.err
	}
	bf.loads++
	verified, err := verify(bf.manifest, res)
	if err != nil {
		bf.err, bf.verified = err, nil
		l.discardFresh(ctx, log, bf, nil)
		return err
	}
	bf.verified = verified
	l.discardFresh(ctx, log, bf, func(id string) bool { // keep what the manifest names, under any of its IDs
		return slices.ContainsFunc(bf.manifest.Images, func(img Image) bool { return slices.Contains(img.IDs(), id) })
	})
	log.Info("bundle loaded", "images", len(verified), "duration", l.now().Sub(start).Round(time.Millisecond).String())
	return nil
}

// added is what a load added to Docker: the IDs it loaded that were not
// among before.
func added(before map[string]bool, res registry.LoadResult) map[string]bool {
	fresh := map[string]bool{}
	for _, id := range res.IDs {
		if !before[id] {
			fresh[id] = true
		}
	}
	return fresh
}

// discardFresh discards each image the last load added, but those keep
// (when set) keeps.
func (l *Loader) discardFresh(ctx context.Context, log *slog.Logger, bf *bundleFile, keep func(id string) bool) {
	for id := range bf.fresh {
		if keep == nil || !keep(id) {
			l.discard(ctx, log, bf, id)
		}
	}
}

// discard removes id if the last load added it and nothing has named it
// since; a failure is logged, the image kept.
func (l *Loader) discard(ctx context.Context, log *slog.Logger, bf *bundleFile, id string) {
	if !bf.fresh[id] {
		return
	}
	delete(bf.fresh, id)
	im, err := l.engine.Inspect(ctx, id)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return
	case err == nil && len(im.RepoTags) > 0:
		log.Warn("a refused load's image has a name now; keeping it", "image_id", id, "names", strings.Join(im.RepoTags, ", "))
		return
	case err == nil:
		err = l.engine.Remove(ctx, id)
	}
	if err != nil {
		log.Warn("a refused load's image could not be removed", "image_id", id, "err", err)
		return
	}
	log.Info("removed the image a refused load added", "image_id", id)
}

// retryable says whether a failed load says nothing about the file: the
// caller gave up, or the Engine was unreachable, hung or silent.
func retryable(ctx context.Context, err error) bool {
	var stalled *registry.StalledError
	var quiet *registry.QuietError
	return ctx.Err() != nil || registry.IsDaemonDown(err) || errors.As(err, &stalled) || errors.As(err, &quiet)
}

// verify gives each image of m the ID the Engine loaded for it: one of the
// image's own IDs (what the manifest names), never another. Any image
// without one fails the whole bundle: its manifest is not what it holds.
func verify(m *Manifest, res registry.LoadResult) (map[string]string, error) {
	if len(res.Names) > 0 {
		return nil, fmt.Errorf("loading it tagged %s, which a bundle never does", strings.Join(res.Names, ", "))
	}
	verified := map[string]string{}
	var bad []string
	for _, img := range m.Images {
		i := slices.IndexFunc(img.IDs(), func(id string) bool { return slices.Contains(res.IDs, id) })
		if i < 0 {
			bad = append(bad, fmt.Sprintf("%s: the manifest names %s", img.Expected, img.describe()))
			continue
		}
		verified[img.Expected] = img.IDs()[i]
	}
	if len(bad) > 0 {
		loaded := "nothing"
		if len(res.IDs) > 0 {
			loaded = strings.Join(res.IDs, ", ")
		}
		return nil, fmt.Errorf("the Engine loaded %s, not what the bundle's manifest names, so nothing is tagged from it:\n  %s\n(if the bundle was written on a classic image store by Docker older than 25 and this daemon uses the containerd image store, its IDs can't be verified here: write the bundle with the nodes' Docker)",
			loaded, strings.Join(bad, "\n  "))
	}
	return verified, nil
}

// loadProgress logs how much of a bundle the Engine has read.
type loadProgress struct {
	log   *slog.Logger
	total int64
	every time.Duration
	mu    sync.Mutex
	next  time.Time
}

func (p *loadProgress) read(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now := time.Now(); now.After(p.next) {
		p.next = now.Add(p.every)
		p.log.Info("loading bundle", "sent", FormatBytes(n), "of", FormatBytes(p.total))
	}
}
