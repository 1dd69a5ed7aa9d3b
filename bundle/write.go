package bundle

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// Saver is the Engine call Write makes. *registry.Engine implements it.
type Saver interface {
	Save(ctx context.Context, ids []string, opts registry.ArchiveOptions) (io.ReadCloser, error)
}

var _ Saver = (*registry.Engine)(nil)

// Entry is an image to put in a bundle: present locally as ImageID.
type Entry struct {
	Name     string
	Expected string
	ImageID  string
	Digest   string // the registry manifest digest, when known
	Source   string
}

// WriteOptions configures Write.
type WriteOptions struct {
	Archive registry.ArchiveOptions
	// Log is told the progress, every ProgressEvery (default 2 s).
	Log           *slog.Logger
	ProgressEvery time.Duration
	// SizeHint is about how many bytes the archive will take (the images'
	// sizes), for the progress lines; zero leaves it out.
	SizeHint int64
}

// Written is what Write wrote.
type Written struct {
	Path     string
	Bytes    int64
	Manifest Manifest
	Duration time.Duration
}

// Write writes a bundle of entries to path: the Engine's save of their
// image IDs, streamed member by member into a temporary file beside path,
// then the manifest, then a rename, so that path is either the old file or
// the whole new bundle, never a part. Memory stays flat whatever the
// images' sizes: layers stream through a fixed buffer; only the archive's
// metadata and its small JSON blobs (manifests, indexes) are kept.
func Write(ctx context.Context, eng Saver, path string, entries []Entry, opts WriteOptions) (Written, error) {
	start := time.Now()
	if len(entries) == 0 {
		return Written{}, errors.New("writing a bundle: no image to put in it")
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".partial-*")
	if err != nil {
		return Written{}, fmt.Errorf("writing bundle %s: %w", path, err)
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	cw := &countingWriter{w: tmp, meter: newMeter(opts, path)}
	buf := bufio.NewWriterSize(cw, 1<<20)
	m, err := stream(ctx, eng, buf, entries, opts)
	if err == nil {
		err = buf.Flush()
	}
	if err == nil {
		err = tmp.Sync() // a bundle is copied elsewhere: make it whole on disk first
	}
	if err == nil {
		err = tmp.Close()
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return Written{}, fmt.Errorf("writing bundle %s: %w", path, err)
	}
	tmp = nil
	w := Written{Path: path, Bytes: cw.n, Manifest: m, Duration: time.Since(start)}
	cw.meter.done(w)
	return w, nil
}

// Stream writes a bundle of entries to w as the Engine's save streams it,
// member by member, the manifest last: what Write puts in a file, for a
// reader elsewhere (a peer agent). Nothing is buffered but the archive's
// metadata; on an error, w holds a part of a bundle, which Read refuses.
func Stream(ctx context.Context, eng Saver, w io.Writer, entries []Entry, opts WriteOptions) (Manifest, error) {
	if len(entries) == 0 {
		return Manifest{}, errors.New("writing a bundle: no image to put in it")
	}
	return stream(ctx, eng, w, entries, opts)
}

// stream copies the Engine's save of entries' images to w, member by
// member, and appends the manifest.
func stream(ctx context.Context, eng Saver, w io.Writer, entries []Entry, opts WriteOptions) (Manifest, error) {
	var ids []string
	for _, e := range entries {
		if !slices.Contains(ids, e.ImageID) {
			ids = append(ids, e.ImageID)
		}
	}
	rc, err := eng.Save(ctx, ids, opts.Archive)
	if err != nil {
		return Manifest{}, err
	}
	defer rc.Close()
	tw := tar.NewWriter(w)
	fs, err := copyArchive(tw, tar.NewReader(rc))
	if err != nil {
		return Manifest{}, err
	}
	if err := fs.vet(); err != nil {
		return Manifest{}, fmt.Errorf("the Engine's save: %w", err)
	}
	m, err := manifestFor(fs, entries)
	if err != nil {
		return Manifest{}, err
	}
	for _, img := range m.Images {
		if img.Digest != "" && !fs.regular["blobs/sha256/"+hexOf(img.Digest)] && opts.Log != nil {
			opts.Log.Warn("the bundle records the image's registry digest but can't prove it: the Engine's save holds no blob of it (the classic image store keeps no registry manifest), so a config pinning that digest won't be served from this bundle",
				"image", img.Expected, "digest", img.Digest)
		}
	}
	if err := writeManifest(tw, m); err != nil {
		return Manifest{}, err
	}
	return m, tw.Close()
}

// copyArchive writes every member of tr to tw, keeping what facts wants.
func copyArchive(tw *tar.Writer, tr *tar.Reader) (*facts, error) {
	fs := newFacts()
	buf := make([]byte, 1<<20)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return fs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading the Engine's save after member %q: %w", fs.last, err)
		}
		if hdr.Name == MemberName {
			return nil, fmt.Errorf("the Engine's save has a member named %s already", MemberName)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("writing member %s: %w", hdr.Name, err)
		}
		var data []byte
		if fs.wants(hdr, true) {
			if data, err = readMember(tr, hdr, maxMeta); err != nil {
				return nil, err
			}
		}
		sum, err := copyMember(tw, tr, hdr, data, buf)
		if err != nil {
			return nil, fmt.Errorf("copying member %s: %w", hdr.Name, err)
		}
		if err := fs.add(hdr, data); err != nil {
			return nil, err
		}
		if sum != nil {
			if err := fs.checkBlob(hdr, sum); err != nil {
				return nil, fmt.Errorf("the Engine's save: %w", err)
			}
		}
	}
}

// manifestFor describes entries as the archive holds them.
func manifestFor(fs *facts, entries []Entry) (Manifest, error) {
	m := Manifest{Version: Version, Created: time.Now().UTC().Truncate(time.Second)}
	for _, e := range entries {
		kind, config, err := fs.identify(e.ImageID)
		if err != nil {
			return Manifest{}, fmt.Errorf("image %s: %w", e.Expected, err)
		}
		m.Images = append(m.Images, Image{
			Name: e.Name, Expected: e.Expected, ImageID: e.ImageID, IDKind: kind,
			ConfigDigest: config, Digest: e.Digest, Source: e.Source,
		})
	}
	if err := m.check(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

func writeManifest(tw *tar.Writer, m Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	now := m.Created
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "prefetch/", Mode: 0o755, ModTime: now}); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: MemberName, Mode: 0o644, Size: int64(len(data)), ModTime: now}); err != nil {
		return err
	}
	_, err = tw.Write(data)
	return err
}

// countingWriter counts what reaches the file, for the progress lines.
type countingWriter struct {
	w     io.Writer
	n     int64
	meter *meter
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.meter.tick(c.n)
	return n, err
}

// meter logs a write's progress at most every so often.
type meter struct {
	log   *slog.Logger
	every time.Duration
	path  string
	hint  int64
	start time.Time
	next  time.Time
}

func newMeter(opts WriteOptions, path string) *meter {
	every := opts.ProgressEvery
	if every <= 0 {
		every = 2 * time.Second
	}
	now := time.Now()
	return &meter{log: opts.Log, every: every, path: path, hint: opts.SizeHint, start: now, next: now.Add(every)}
}

func (m *meter) tick(n int64) {
	if m.log == nil {
		return
	}
	now := time.Now()
	if now.Before(m.next) {
		return
	}
	m.next = now.Add(m.every)
	attrs := []any{"file", m.path, "written", FormatBytes(n), "bytes", n}
	if m.hint > 0 {
		attrs = append(attrs, "of_about", FormatBytes(m.hint))
	}
	m.log.Info("writing bundle", attrs...)
}

func (m *meter) done(w Written) {
	if m.log == nil {
		return
	}
	secs := max(w.Duration.Seconds(), 1e-3)
	m.log.Info("bundle written", "file", w.Path, "images", len(w.Manifest.Images), "written", FormatBytes(w.Bytes), "bytes", w.Bytes,
		"duration", w.Duration.Round(time.Millisecond).String(), "rate", FormatBytes(int64(float64(w.Bytes)/secs))+"/s")
}

// FormatBytes writes n as people read sizes: 512 B, 3.2 MiB, 5.0 GiB.
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
