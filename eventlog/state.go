package eventlog

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// The state file holds the index of the last frame written and flushed to
// stdout, as {"index":N}. It is replaced atomically (temp file, fsync,
// rename, fsync of the directory), so a crash at any point leaves either the
// old content or the new, never a mix.

type state struct {
	Index *uint64 `json:"index"`
}

// readState returns the saved index; ok is false when there is no file.
func readState(path string) (index uint64, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("reading state file: %w", err)
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil || s.Index == nil {
		return 0, false, fmt.Errorf("reading state file %q: want {\"index\":N}, got %.80q", path, b)
	}
	return *s.Index, true, nil
}

func writeState(path string, index uint64) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("writing state file: %w", err)
	}
	b, _ := json.Marshal(state{Index: &index})
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
