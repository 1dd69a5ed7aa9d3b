package eventlog

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

// The state file holds the position of the last frame written and flushed
// to stdout, as {"index":N,"frames":K}: K frames at index N were written
// (Nomad may send one index's events in several frames); a file without
// "frames" (written before it was kept) means all of them. It is replaced
// atomically (temp file, fsync, rename, fsync of the directory), so a crash
// at any point leaves either the old content or the new, never a mix.

type state struct {
	Index  *uint64 `json:"index"`
	Frames int     `json:"frames,omitempty"`
}

// readState returns the saved position; ok is false when there is no file.
func readState(path string) (pos nomad.Position, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return pos, false, nil
	}
	if err != nil {
		return pos, false, fmt.Errorf("reading state file: %w", err)
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil || s.Index == nil || s.Frames < 0 {
		return pos, false, fmt.Errorf("reading state file %q: want {\"index\":N,\"frames\":K}, got %.80q", path, b)
	}
	return nomad.Position{Index: *s.Index, Written: true, Frames: s.Frames}, true, nil
}

func writeState(path string, pos nomad.Position) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("writing state file: %w", err)
	}
	b, _ := json.Marshal(state{Index: &pos.Index, Frames: pos.Frames})
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("writing state file: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync() // make the rename itself durable
		d.Close()
	}
	return nil
}

// checkWritable fails now, rather than after the first events, when the state
// file's directory cannot be written.
func checkWritable(path string) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("writing state file: %w", err)
	}
	f.Close()
	return os.Remove(tmp)
}
