//go:build linux

package eventlog

import (
	"bytes"
	"os"
	"testing"
)

// A pipe for stdout is grown to a batch's size; anything else is left alone.
func TestGrowPipe(t *testing.T) {
	t.Parallel()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if got := growPipe(w, batchBytes); got < batchBytes {
		t.Errorf("pipe: got capacity %d, want %d (the batch size)", got, batchBytes)
	}
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := growPipe(f, batchBytes); got != 0 {
		t.Errorf("regular file: got %d, want 0", got)
	}
	if got := growPipe(new(bytes.Buffer), batchBytes); got != 0 {
		t.Errorf("buffer: got %d, want 0", got)
	}
}
