package lockfile

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("lock file mode: got %v, %v; want 0660 whatever the umask: the group's agents contend for it, nobody else opens it", fi.Mode(), err)
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

// A name planted at the lock's path in a shared directory does not redirect
// the agent: a symlink (to a file it would overwrite with its PID) and a
// FIFO (whose open would block) are refused, and a world-writable file is
// made 0660.
func TestPlantedLockFile(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep me\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.lock")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	if l, err := Acquire(link); err == nil {
		l.Release()
		t.Errorf("Acquire through a symlink succeeded")
	} else if !strings.Contains(err.Error(), "symlink") {
		t.Errorf("Acquire through a symlink: %v; want it to say symlink", err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me\n" {
		t.Errorf("the symlink's target was written: %q", b)
	}

	fifo := filepath.Join(dir, "fifo.lock")
	if err := syscall.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	if l, err := Acquire(fifo); err == nil {
		l.Release()
		t.Errorf("Acquire of a FIFO succeeded")
	} else if !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Acquire of a FIFO: %v; want it to say not a regular file", err)
	}

	open := filepath.Join(dir, "open.lock")
	if err := os.WriteFile(open, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o666); err != nil {
		t.Fatal(err)
	}
	l, err := Acquire(open)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if fi, err := os.Stat(open); err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("a world-writable lock file of ours: mode %v after Acquire, want 0660", fi.Mode())
	}
}
