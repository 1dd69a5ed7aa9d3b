package watch

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// fast is the debounce most tests use: short, so tests are quick, and still
// far longer than any single action a test takes.
var fast = Debounce{Quiet: 100 * time.Millisecond, Max: time.Second}

// callWait bounds every wait for an expected call. It is generous: a call
// that takes this long is missing, not slow.
const callWait = 5 * time.Second

// calls records the calls a running watch makes.
type calls struct {
	ch chan error
	d  Debounce
}

// watching runs the watch loop on path until the test ends, exactly as File
// does, except that it returns only once the directory is watched, so the
// test's changes can't race the watch's setup.
func watching(t *testing.T, path string, d Debounce) *calls {
	t.Helper()
	w, err := newWatcher(path)
	if err != nil {
		t.Fatalf("newWatcher(%q): %v", path, err)
	}
	return running(t, w, d, nil)
}

// running runs w's loop until the test ends. If hook is not nil, each call
// runs it first.
func running(t *testing.T, w *watcher, d Debounce, hook func()) *calls {
	t.Helper()
	c := &calls{ch: make(chan error, 1000), d: d.withDefaults()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		defer w.close()
		done <- w.run(ctx, d, func(err error) {
			if hook != nil {
				hook()
			}
			select {
			case c.ch <- err:
			default:
				t.Errorf("more than %d calls", cap(c.ch))
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: got %v, want nil after cancel", err)
		}
	})
	return c
}

// next waits for a call and returns its error; it fails the test if none
// comes within callWait.
func (c *calls) next(t *testing.T) error {
	t.Helper()
	select {
	case err := <-c.ch:
		return err
	case <-time.After(callWait):
		t.Fatalf("got no call within %v, want one", callWait)
		return nil
	}
}

// none fails the test if a call comes within three quiet windows.
func (c *calls) none(t *testing.T) {
	t.Helper()
	select {
	case err := <-c.ch:
		t.Fatalf("got a call (err %v), want none", err)
	case <-time.After(3 * c.d.Quiet):
	}
}

// one waits for a call, then fails the test unless no second call follows
// within three quiet windows.
func (c *calls) one(t *testing.T) {
	t.Helper()
	if err := c.next(t); err != nil {
		t.Errorf("got call with error %v, want nil", err)
	}
	c.none(t)
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// render replaces path the way consul-template does and Nomad shows it: a
// numbered temporary file in the same directory is created, written and
// chmodded, then renamed over path.
func render(t *testing.T, path, content string) {
	t.Helper()
	f, err := os.CreateTemp(filepath.Dir(path), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, steps ...func() error) {
	t.Helper()
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
}

// kubernetes lays dir out the way a Kubernetes ConfigMap volume does:
// config.hcl → ..data/config.hcl, ..data → ..<version>/.
func kubernetes(t *testing.T, dir, version, content string) {
	t.Helper()
	ts := filepath.Join(dir, ".."+version)
	run(t,
		func() error { return os.Mkdir(ts, 0o755) },
		func() error { return os.WriteFile(filepath.Join(ts, "config.hcl"), []byte(content), 0o644) },
		func() error { return os.Symlink(".."+version, filepath.Join(dir, "..data_tmp")) },
		func() error { return os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")) },
	)
	if _, err := os.Lstat(filepath.Join(dir, "config.hcl")); errors.Is(err, fs.ErrNotExist) {
		run(t, func() error { return os.Symlink("..data/config.hcl", filepath.Join(dir, "config.hcl")) })
	}
}

// TestFileChanges: each way the file gets changed is exactly one call.
func TestFileChanges(t *testing.T) {
	t.Parallel()
	existing := func(t *testing.T, path string) { write(t, path, "a = 1\n") }
	tests := []struct {
		name  string
		setup func(t *testing.T, path string)
		act   func(t *testing.T, path string)
	}{
		{"write in place", existing, func(t *testing.T, path string) { write(t, path, "a = 2\n") }},
		{"append in place", existing, func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 10 {
				if _, err := f.WriteString("b" + strconv.Itoa(i) + " = 1\n"); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}},
		{"delete then create", existing, func(t *testing.T, path string) {
			run(t, func() error { return os.Remove(path) })
			write(t, path, "a = 2\n")
		}},
		{"chmod only", existing, func(t *testing.T, path string) {
			run(t, func() error { return os.Chmod(path, 0o600) })
		}},
		{"temporary file renamed over it, as Nomad renders", existing, func(t *testing.T, path string) {
			render(t, path, "a = 2\n")
		}},
		{"editor saving through a backup", existing, func(t *testing.T, path string) {
			run(t, func() error { return os.Rename(path, path+"~") })
			write(t, path, "a = 2\n")
			run(t, func() error { return os.Remove(path + "~") })
		}},
		{"delete", existing, func(t *testing.T, path string) {
			run(t, func() error { return os.Remove(path) })
		}},
		{"created after the watch started", func(*testing.T, string) {}, func(t *testing.T, path string) {
			write(t, path, "a = 1\n")
		}},
		{"rendered after the watch started", func(*testing.T, string) {}, func(t *testing.T, path string) {
			render(t, path, "a = 1\n")
		}},
		{"kubernetes ..data swap behind a symlink", func(t *testing.T, path string) {
			kubernetes(t, filepath.Dir(path), "2026_01_01_v1", "a = 1\n")
		}, func(t *testing.T, path string) {
			dir := filepath.Dir(path)
			kubernetes(t, dir, "2026_01_02_v2", "a = 2\n")
			run(t, func() error { return os.RemoveAll(filepath.Join(dir, "..2026_01_01_v1")) })
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "config.hcl")
			tt.setup(t, path)
			c := watching(t, path, fast)
			tt.act(t, path)
			c.one(t)
			// And the watch carries on after the change.
			render(t, path, "c = 3\n")
			c.one(t)
		})
	}
}

// TestOtherNames: changes to other names in the directory are not calls.
func TestOtherNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup func(t *testing.T, path string)
		act   func(t *testing.T, dir string)
	}{
		{"consul-template's temporary file, left behind", nil, func(t *testing.T, dir string) {
			f, err := os.CreateTemp(dir, "")
			if err != nil {
				t.Fatal(err)
			}
			run(t, func() error { _, err := f.WriteString("a = 2\n"); return err }, f.Close,
				func() error { return os.Chmod(f.Name(), 0o600) },
				func() error { return os.Remove(f.Name()) })
		}},
		{"an editor's swap file", nil, func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, ".config.hcl.swp"), "x")
			run(t, func() error { return os.Remove(filepath.Join(dir, ".config.hcl.swp")) })
		}},
		{"names that only start or end like it", nil, func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "config.hcl.bak"), "x")
			write(t, filepath.Join(dir, "old-config.hcl"), "x")
			run(t, func() error {
				return os.Rename(filepath.Join(dir, "config.hcl.bak"), filepath.Join(dir, "config.hcl.orig"))
			})
		}},
		{"a subdirectory and a file of the same name in it", nil, func(t *testing.T, dir string) {
			run(t, func() error { return os.Mkdir(filepath.Join(dir, "sub"), 0o755) })
			write(t, filepath.Join(dir, "sub", "config.hcl"), "x")
		}},
		{"other files next to a kubernetes symlink", func(t *testing.T, path string) {
			kubernetes(t, filepath.Dir(path), "2026_01_01_v1", "a = 1\n")
		}, func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "other.hcl"), "x")
			run(t, func() error { return os.Mkdir(filepath.Join(dir, "..2026_01_02_v2"), 0o755) })
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "config.hcl")
			if tt.setup != nil {
				tt.setup(t, path)
			} else {
				write(t, path, "a = 1\n")
			}
			c := watching(t, path, fast)
			tt.act(t, filepath.Dir(path))
			c.none(t)
		})
	}
}

// TestBurst: fifty renders, each closer to the last than the quiet window,
// are one call.
func TestBurst(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "config.hcl")
	write(t, path, "n = 0\n")
	c := watching(t, path, Debounce{Quiet: 500 * time.Millisecond, Max: time.Minute})
	for i := 1; i <= 50; i++ {
		render(t, path, "n = "+strconv.Itoa(i)+"\n")
		time.Sleep(10 * time.Millisecond)
	}
	c.one(t)
	if got, err := os.ReadFile(path); err != nil || string(got) != "n = 50\n" {
		t.Errorf("got %q (err %v), want %q", got, err, "n = 50\n")
	}
}

// TestNeverQuiet: a writer that never pauses for the quiet window still gets
// a call every Max. Quiet is so long here that any call while the writer is
// writing can only come from Max.
func TestNeverQuiet(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "config.hcl")
	write(t, path, "n = 0\n")
	d := Debounce{Quiet: time.Minute, Max: 300 * time.Millisecond}
	c := watching(t, path, d)
	got := 0
	// At most 10 Max windows' worth of writes: two calls are due long before.
	for i := 1; i <= 150 && got < 2; i++ {
		render(t, path, "n = "+strconv.Itoa(i)+"\n")
		time.Sleep(20 * time.Millisecond)
		select {
		case err := <-c.ch:
			if err != nil {
				t.Errorf("got call with error %v, want nil", err)
			}
			got++
		default:
		}
	}
	if got < 2 {
		t.Errorf("got %d calls during 150 writes 20ms apart, want 2 (Max %v)", got, d.Max)
	}
}

// TestMissing: a missing directory, or a path that is a directory, is an
// error at start that names it.
func TestMissing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name     string
		path     string
		wantText string
		wantIs   error
	}{
		{"missing directory", filepath.Join(dir, "nope", "config.hcl"), filepath.Join(dir, "nope"), fs.ErrNotExist},
		{"a directory", dir, dir, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := File(t.Context(), tt.path, fast, func(error) { t.Error("got a call, want none") })
			if err == nil {
				t.Fatalf("got nil, want an error")
			}
			if !strings.Contains(err.Error(), strconv.Quote(tt.wantText)) {
				t.Errorf("got %q, want it to name %q", err, tt.wantText)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("got %v, want it to wrap %v", err, tt.wantIs)
			}
		})
	}
}

// TestDirectoryGone: once the directory is removed or renamed nothing more
// can be seen, so the loop says so rather than watching nothing.
func TestDirectoryGone(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		act  func(dir string) error
	}{
		{"removed", os.RemoveAll},
		{"renamed", func(dir string) error { return os.Rename(dir, dir+".old") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "local")
			path := filepath.Join(dir, "config.hcl")
			run(t, func() error { return os.Mkdir(dir, 0o755) })
			write(t, path, "a = 1\n")
			w, err := newWatcher(path)
			if err != nil {
				t.Fatal(err)
			}
			defer w.close()
			run(t, func() error { return tt.act(dir) })
			ctx, cancel := context.WithTimeout(t.Context(), callWait)
			defer cancel()
			err = w.run(ctx, fast, func(error) {})
			if !errors.Is(err, errDirectoryGone) || !strings.Contains(err.Error(), strconv.Quote(dir)) {
				t.Errorf("got %v, want %v naming %q", err, errDirectoryGone, dir)
			}
		})
	}
}

// TestRelativePath: a path relative to the working directory works too.
func TestRelativePath(t *testing.T) {
	t.Parallel()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	abs := filepath.Join(t.TempDir(), "config.hcl")
	path, err := filepath.Rel(wd, abs)
	if err != nil {
		t.Fatal(err)
	}
	write(t, abs, "a = 1\n")
	c := watching(t, path, fast)
	render(t, abs, "a = 2\n")
	c.one(t)
}

// TestOverflow: when the kernel's event queue overflows, events were lost,
// so that is a change, and the call carries fsnotify's error. The queue is
// overflowed for real, by changing the file while the first call blocks.
//
// Once released, the loop drains some 20,000 queued events before it reads
// the overflow, which the kernel queues last; how long that takes depends on
// the machine (under -race on a busy one, longer than Max). So the drained
// events may fire as calls of their own, with no error, before the call that
// carries the overflow: the test takes any number of those, then wants the
// overflow, then nothing more.
func TestOverflow(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	if err != nil {
		t.Skipf("no inotify queue limit to overflow: %v", err)
	}
	limit, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || limit > 100_000 {
		t.Skipf("inotify max_queued_events %q: too large to overflow quickly", b)
	}
	path := filepath.Join(t.TempDir(), "config.hcl")
	write(t, path, "a = 1\n")
	w, err := newWatcher(path)
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}, 1), make(chan struct{})
	c := running(t, w, fast, func() {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
	})
	releaseAll := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseAll) // Runs before running's cleanup waits for the loop.
	write(t, path, "a = 2\n")
	select {
	case <-entered:
	case <-time.After(callWait):
		t.Fatalf("got no call within %v, want one", callWait)
	}
	// While the loop is held in the first call, fsnotify's reader holds at
	// most 4096 events and the kernel queues up to limit; alternating two
	// kinds of change keeps the kernel from merging them.
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range limit + 4096 + 1000 {
		if i%2 == 0 {
			_, err = f.WriteAt([]byte("a"), 0)
		} else {
			err = f.Chmod(0o600 + os.FileMode(i/2%2)*0o40)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	run(t, f.Close)
	releaseAll() // Let this call and all later ones return.
	if err := c.next(t); err != nil {
		t.Errorf("first call: got error %v, want nil", err)
	}
	// Each call without the error covers at least one quiet window of
	// drained events; far fewer than this many fit in a callWait each.
	for calls := 1; ; calls++ {
		err = c.next(t)
		if err == nil {
			if calls == 100 {
				t.Fatalf("got %d calls without an error after the overflow, want one with %v", calls, fsnotify.ErrEventOverflow)
			}
			continue
		}
		if !errors.Is(err, fsnotify.ErrEventOverflow) || !strings.Contains(err.Error(), strconv.Quote(filepath.Dir(path))) {
			t.Errorf("got %v, want %v naming the directory", err, fsnotify.ErrEventOverflow)
		}
		break
	}
	c.none(t)
}

// TestCancel is not parallel, so the goroutines it counts are its own: File
// returns promptly when ctx is cancelled, with a burst pending, and leaves no
// goroutine behind.
func TestCancel(t *testing.T) {
	before := runtime.NumGoroutine()
	path := filepath.Join(t.TempDir(), "config.hcl")
	write(t, path, "a = 1\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	called := make(chan struct{}, 100)
	done := make(chan error, 1)
	go func() {
		done <- File(ctx, path, Debounce{Quiet: 20 * time.Millisecond, Max: time.Minute}, func(error) { called <- struct{}{} })
	}()
	// File's watch is set up on its own goroutine: change the file until a
	// call shows the watch is running.
	for i := 0; ; i++ {
		if i == 50 {
			t.Fatal("got no call after 50 changes, want one")
		}
		write(t, path, "a = "+strconv.Itoa(i)+"\n")
		select {
		case <-called:
		case <-time.After(100 * time.Millisecond):
			continue
		}
		break
	}
	write(t, path, "pending = true\n")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("got %v, want nil", err)
		}
	case <-time.After(callWait):
		t.Fatalf("File still running %v after cancel", callWait)
	}
	// fsnotify's Close signals its reader and may return before the reader
	// has been scheduled to exit: give it a moment, boundedly.
	stacks := goroutines()
	for i := 0; i < 100 && strings.Contains(stacks, "fsnotify"); i++ {
		time.Sleep(10 * time.Millisecond)
		stacks = goroutines()
	}
	if strings.Contains(stacks, "fsnotify") {
		t.Errorf("got fsnotify goroutines a second after File returned, want none:\n%s", stacks)
	}
	after := runtime.NumGoroutine()
	for i := 0; i < 100 && after > before; i++ {
		time.Sleep(10 * time.Millisecond)
		after = runtime.NumGoroutine()
	}
	if after > before {
		t.Errorf("got %d goroutines, want %d as before File:\n%s", after, before, goroutines())
	}
}

func goroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}
