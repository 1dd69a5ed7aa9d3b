//go:build linux

package eventlog

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// growPipe raises the capacity of w to size bytes when w is a pipe or a
// FIFO (F_SETPIPE_SZ; an unprivileged process may go up to
// /proc/sys/fs/pipe-max-size, 1 MiB by default). It returns the capacity
// set, 0 when w is not a pipe or the kernel refused.
//
// In HA mode a checkpoint's batch is written to stdout in one write. A write
// that fits in the pipe's free space is copied at once, and a SIGKILL cannot
// cut it; one that does not sleeps until the reader has made room, and a
// SIGKILL then leaves part of the batch unwritten although its checkpoint
// says it was. A bigger pipe makes that rare (docs/eventlog.md, HA mode).
func growPipe(w io.Writer, size int) int {
	f, ok := w.(*os.File)
	if !ok {
		return 0
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	_ = rc.Control(func(fd uintptr) {
		if got, err := unix.FcntlInt(fd, unix.F_SETPIPE_SZ, size); err == nil {
			n = got
		}
	})
	return n
}
