package registry

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
)

// saved saves id through e and returns the archive.
func saved(t *testing.T, e *Engine, id string) []byte {
	t.Helper()
	rc, err := e.Save(context.Background(), []string{id}, ArchiveOptions{StallTimeout: 10 * time.Second, QuietTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestSaveLoadByID: an image saved by ID names no tag; loading it back
// reports its ID, tags nothing, and leaves a tag already on the node (one
// of the image's old names, now on other content) where it was.
func TestSaveLoadByID(t *testing.T) {
	testbed.Need(t, bed)
	ctx := context.Background()
	e := newEngine(t, nil)
	id, err := bed.Import(ctx, "archive/a:1", "archive-a", 4<<10)
	if err != nil {
		t.Fatal(err)
	}
	data := saved(t, e, id)
	var items []struct{ RepoTags []string }
	if err := json.Unmarshal(member(t, data, "manifest.json"), &items); err != nil || len(items) != 1 || len(items[0].RepoTags) != 0 {
		t.Fatalf("manifest.json of a save by ID: %v %+v, want one entry without RepoTags", err, items)
	}
	if err := bed.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	otherID, err := bed.Import(ctx, "archive/a:1", "archive-other", 4<<10)
	if err != nil {
		t.Fatal(err)
	}

	res, err := e.Load(ctx, bytes.NewReader(data), ArchiveOptions{StallTimeout: 10 * time.Second, QuietTimeout: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.IDs, []string{id}) || len(res.Names) != 0 {
		t.Errorf("load reported IDs %v and names %v, want [%s] and none", res.IDs, res.Names, id)
	}
	if im, err := e.Inspect(ctx, id); err != nil || im.ID != id || len(im.RepoTags) != 0 {
		t.Errorf("loaded image: %+v, %v; want %s untagged", im, err, id)
	}
	if im, _ := e.Inspect(ctx, "archive/a:1"); im.ID != otherID {
		t.Errorf("archive/a:1 moved to %s by the load, want it left on %s", im.ID, otherID)
	}
}

// TestLoadTruncated: the Engine answers 200 and reports a truncated archive
// inside its stream; Load fails and nothing is loaded.
func TestLoadTruncated(t *testing.T) {
	testbed.Need(t, bed)
	ctx := context.Background()
	e := newEngine(t, nil)
	id, err := bed.Import(ctx, "archive/trunc:1", "archive-trunc", 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	data := saved(t, e, id)
	if err := bed.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	_, err = e.Load(ctx, bytes.NewReader(data[:len(data)/2]), ArchiveOptions{StallTimeout: 10 * time.Second}, nil)
	if err == nil || !strings.Contains(err.Error(), "unexpected EOF") {
		t.Errorf("loading half an archive: got %v, want the Engine's unexpected EOF", err)
	}
	if _, err := e.Inspect(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Errorf("after the failed load, inspect %s: %v, want not found", id, err)
	}
}

// TestLoadStall: an archive that stops coming is cancelled after
// StallTimeout, saying so.
func TestLoadStall(t *testing.T) {
	testbed.Need(t, bed)
	e := newEngine(t, nil)
	_, err := e.Load(context.Background(), &slowReader{pause: 3 * time.Second}, ArchiveOptions{StallTimeout: time.Second}, nil)
	var stalled *StalledError
	if !errors.As(err, &stalled) {
		t.Errorf("got %v, want a *StalledError", err)
	}
}

// slowReader gives a tar header's worth of zeros, then pauses before the
// next read, then ends.
type slowReader struct {
	pause time.Duration
	reads int
}

func (r *slowReader) Read(p []byte) (int, error) {
	r.reads++
	switch r.reads {
	case 1:
		return copy(p, make([]byte, 512)), nil
	case 2:
		time.Sleep(r.pause)
	}
	return 0, io.EOF
}

// TestSaveQuiet: a daemon that never answers fails a save after
// QuietTimeout, naming the wait.
func TestSaveQuiet(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "hung.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	e, err := NewEngine(Options{Host: "unix://" + sock})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	_, err = e.Save(context.Background(), []string{"sha256:" + strings.Repeat("a", 64)}, ArchiveOptions{QuietTimeout: 300 * time.Millisecond})
	var quiet *QuietError
	if !errors.As(err, &quiet) {
		t.Errorf("got %v, want a *QuietError", err)
	}
}

// member returns the content of the archive member name.
func member(t *testing.T, archive []byte, name string) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("no member %s: %v", name, err)
		}
		if hdr.Name == name {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return data
		}
	}
}
