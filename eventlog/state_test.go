package eventlog

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

func TestStateFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	if _, ok, err := readState(path); ok || err != nil {
		t.Errorf("missing file: got ok %v err %v, want neither", ok, err)
	}
	want := nomad.Position{Index: 18446744073709551615, Written: true, Frames: 2}
	if err := writeState(path, want); err != nil {
		t.Fatal(err)
	}
	if pos, ok, err := readState(path); pos != want || !ok || err != nil {
		t.Errorf("got %+v %v %v, want the max uint64 with its 2 frames", pos, ok, err)
	}
	// A file from before frames were kept: every frame at the index written.
	os.WriteFile(path, []byte(`{"index":7}`), 0o644)
	if pos, ok, err := readState(path); pos != (nomad.Position{Index: 7, Written: true}) || !ok || err != nil {
		t.Errorf(`{"index":7}: got %+v %v %v, want index 7, frames 0 (all)`, pos, ok, err)
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp file left behind: %v", err)
	}
	for _, bad := range []string{"", "{}", `{"index":-1}`, `{"index":1`, "12", `{"index":1,"frames":-1}`, `{"index":1,"frames":"x"}`} {
		os.WriteFile(path, []byte(bad), 0o644)
		if _, _, err := readState(path); err == nil {
			t.Errorf("state %q: got no error, want one", bad)
		}
	}
	// cmd/eventlog maps a *ConfigError to its usage exit code, any other
	// error to a runtime failure.
	var cerr *ConfigError
	o := options("http://127.0.0.1:1")
	o.StateFile = path
	if err := Run(context.Background(), o); !errors.As(err, &cerr) {
		t.Errorf("corrupt state file: got %v, want a *ConfigError", err)
	}
	o.StateFile = filepath.Join(dir, "missing", "state")
	if err := Run(context.Background(), o); err == nil || errors.As(err, &cerr) {
		t.Errorf("unwritable state file: got %v, want an error that is not a *ConfigError", err)
	}
}
