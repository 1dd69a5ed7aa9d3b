// Package lockfile makes sure only one prefetch agent runs per node. The lock
// is an flock(2) on a file, taken atomically and without a check-then-write
// race (the pidfile race yourlabs.runner documented): the kernel holds it for
// the life of the process and drops it when the process dies, however it
// dies, so a stale file never blocks a restart. The holder's PID is written
// into the file only to name it in the second agent's error.
//
// It imports nothing of the project's.
package lockfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Lock is a held lock.
type Lock struct {
	f *os.File
}

// HeldError says another process holds the lock.
type HeldError struct {
	Path string
	PID  int // 0 when the holder has not written it yet
}

func (e *HeldError) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("another prefetch agent holds the lock %s", e.Path)
	}
	return fmt.Sprintf("another prefetch agent (PID %d) holds the lock %s", e.PID, e.Path)
}

// Acquire takes the lock at path, creating the file (and its directory) if
// needed. It fails at once with a *HeldError if another process holds it.
func Acquire(path string) (*Lock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating the lock file's directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, fmt.Errorf("opening the lock file: %w", err)
	}
	// Readable and writable by all, whatever the umask: the agent may run as
	// a systemd unit's user on one boot and as a Nomad task's user the next,
	// and each must be able to open the other's lock file to contend for it
	// (it lives in /run/lock, which is sticky). Only the owner can chmod.
	if fi, err := f.Stat(); err == nil && fi.Mode().Perm() != 0o666 {
		_ = f.Chmod(0o666)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			data, _ := os.ReadFile(path)
			pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
			return nil, &HeldError{Path: path, PID: pid}
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

// Release drops the lock. The file stays: removing it would let a third
// process lock a new file while a second still waits on the old one.
func (l *Lock) Release() error {
	if err := syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN); err != nil {
		l.f.Close()
		return fmt.Errorf("unlocking %s: %w", l.f.Name(), err)
	}
	return l.f.Close()
}
