package lockfile

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestAcquire(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "prefetch.lock")
	l, err := Acquire(path)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if got := string(data); got != strconv.Itoa(os.Getpid())+"\n" {
		t.Errorf("lock file holds %q, want our PID", got)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o666 {
		t.Errorf("lock file mode: got %v, %v; want 0666 so another user's agent can contend for it", fi.Mode(), err)
	}

	// flock locks belong to open file descriptions: a second open in this
	// process conflicts just as another process would.
	_, err = Acquire(path)
	var held *HeldError
	if !errors.As(err, &held) || held.PID != os.Getpid() {
		t.Fatalf("second Acquire: got %v, want a HeldError naming PID %d", err, os.Getpid())
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l2, err := Acquire(path)
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	l2.Release()
}

// TestHeldByAnotherProcess has flock(1), from util-linux, hold the lock and
// write a PID into it, as a second agent would find it.
func TestHeldByAnotherProcess(t *testing.T) {
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("flock(1) not installed")
	}
	path := filepath.Join(t.TempDir(), "prefetch.lock")
	cmd := exec.Command("flock", path, "sh", "-c", `echo 4242 > "$0"; exec sleep 30`, path)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var last error
	for i := 0; i < 500; i++ {
		l, err := Acquire(path)
		if err == nil {
			l.Release() // flock(1) waits for us
		}
		var held *HeldError
		if errors.As(err, &held) && held.PID == 4242 {
			return
		}
		last = err
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("never saw the lock held by PID 4242; last: %v", last)
}
