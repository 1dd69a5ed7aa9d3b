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
//
// The file is opened without following a symlink and must be a regular
// file: in a directory others may write (/run/lock), a name planted there
// must not redirect the agent's writes. It is made mode 0660, never
// world-writable: the agent's users (a systemd unit's and a Nomad task's)
// share it through a group, the Docker socket's in the shipped setups
// (docs/bootstrap.md); a world-writable file someone else owns is refused.
func Acquire(path string) (*Lock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("creating the lock file's directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o660)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("opening the lock file %s: it is a symlink, refused", path)
		}
		return nil, fmt.Errorf("opening the lock file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening the lock file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("the lock file %s is not a regular file (%s), refused", path, fi.Mode().Type())
	}
	// 0660 whatever the umask, so the other agent user of the group can
	// open it; only the owner (or root) can chmod. Another user's file open
	// to the world is refused.
	if perm := fi.Mode().Perm(); perm != 0o660 {
		if err := f.Chmod(0o660); err != nil && perm&0o007 != 0 {
			f.Close()
			return nil, fmt.Errorf("the lock file %s is mode %04o, open to every user, and is not ours to fix (%w): remove it, or use a directory only the agent's users may write", path, perm, err)
		}
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
