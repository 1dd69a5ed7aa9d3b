package eventlog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
)

const haPath = "nomad/jobs/eventlog/lock"

// haServer is the test server with locks that fail over in seconds: Nomad
// takes TTLs of 10 s and more and resets a lock to 15 s when its holder
// writes the items; here both are 1 s.
func haServer(t *testing.T) *nomadtest.Server {
	return nomadtest.StartT(t, nomadtest.Options{MinLockTTL: time.Second, DefaultLockTTL: time.Second, DefaultLockDelay: time.Second,
		// ACLs on: the instances' tokens read no lock, as workload identities (recorded).
		ManagementToken: "management"})
}

// haOptions are the options of an instance in HA mode with its own token.
func haOptions(t *testing.T, url, token string) Options {
	t.Helper()
	o := options(url)
	o.Index = 0
	o.Topics = []string{"Job"}
	o.HALock, o.HATTL, o.HALockDelay = haPath, time.Second, time.Second
	o.StateInterval = 100 * time.Millisecond
	o.TokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(o.TokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	o.Listen = "127.0.0.1:0"
	return o
}

func contains(sub string) func(string) bool {
	return func(s string) bool { return strings.Contains(s, sub) }
}

// get returns the status and body of path on the instance's -listen.
func get(t *testing.T, r *running, path string) (int, string) {
	t.Helper()
	addr := listenAddress(t, r.stderr.WaitFor(t, "the listen address", contains("serving /healthz")))
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// lineIndexes returns the Index of each stdout line.
func lineIndexes(t *testing.T, out string) []uint64 {
	t.Helper()
	var idx []uint64
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if l == "" {
			continue
		}
		var e struct{ Index uint64 }
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("stdout line %.80q: %v", l, err)
		}
		idx = append(idx, e.Index)
	}
	return idx
}

// exactlyOnce checks that the outputs, in order, hold every published
// index once.
func exactlyOnce(t *testing.T, published []uint64, outs ...[]uint64) {
	t.Helper()
	var all []uint64
	for _, o := range outs {
		all = append(all, o...)
	}
	seen := map[uint64]int{}
	for _, i := range all {
		seen[i]++
	}
	for _, i := range published {
		if seen[i] != 1 {
			t.Errorf("index %d written %d times, want once", i, seen[i])
		}
		delete(seen, i)
	}
	for i := range seen {
		t.Errorf("index %d written but never published", i)
	}
	for k, o := range outs {
		for j := 1; j < len(o); j++ {
			if o[j] <= o[j-1] {
				t.Errorf("output %d: index %d after %d", k, o[j], o[j-1])
			}
		}
	}
}

// Two instances: one streams, the other is a healthy standby; the holder
// stops cleanly, releases the lock, and the standby resumes from the
// checkpoint in the lock's variable: every event once.
func TestHAStandbyResumesFromCheckpoint(t *testing.T) {
	t.Parallel()
	srv := haServer(t)
	var published []uint64
	for i := range 20 {
		published = append(published, srv.Publish(event(i)))
	}
	a := startRun(t, haOptions(t, srv.URL, "a"))
	a.stderr.WaitFor(t, "a to acquire the lock", contains("HA lock acquired"))
	a.stdout.WaitLines(t, 20)
	b := startRun(t, haOptions(t, srv.URL, "b"))
	b.stderr.WaitFor(t, "b to wait as a standby", contains("standby: another instance holds the HA lock"))

	if code, body := get(t, b, "/healthz"); code != 200 || !strings.HasPrefix(body, "standby") {
		t.Errorf("standby /healthz: got %d %q, want 200 standby", code, body)
	}
	if _, m := get(t, b, "/metrics"); !strings.Contains(m, "eventlog_ha_active 0") {
		t.Errorf("standby metrics: no eventlog_ha_active 0 in\n%s", m)
	}
	if _, m := get(t, a, "/metrics"); !strings.Contains(m, "eventlog_ha_active 1") || !strings.Contains(m, "eventlog_ha_checkpoint_index 20") {
		t.Errorf("holder metrics: want eventlog_ha_active 1 and eventlog_ha_checkpoint_index 20 in\n%s", m)
	}
	if v, _ := srv.Variable(haPath); v.Items["index"] != "20" {
		t.Errorf("the lock's variable holds %v, want index 20", v.Items)
	}

	if err := a.stop(t); err != nil {
		t.Fatalf("a: got %v, want nil", err)
	}
	if !strings.Contains(a.stderr.String(), "HA lock released") {
		t.Errorf("a did not release the lock:\n%s", a.stderr)
	}
	for i := 20; i < 30; i++ {
		published = append(published, srv.Publish(event(i)))
	}
	b.stdout.WaitLines(t, 10)
	if err := b.stop(t); err != nil {
		t.Fatalf("b: got %v, want nil", err)
	}
	exactlyOnce(t, published, lineIndexes(t, a.stdout.String()), lineIndexes(t, b.stdout.String()))
	if strings.Contains(b.stderr.String(), "gap") {
		t.Errorf("b reported a gap:\n%s", b.stderr)
	}
}

// A renewal Nomad refuses (the lock lapsed while the holder was silent)
// stops the stream at once: the instance says so, counts it, waits as a
// standby, and when the lock is free again takes it back and resumes from
// its checkpoint, without a repeat.
func TestHARenewRefused(t *testing.T) {
	t.Parallel()
	srv := haServer(t)
	var published []uint64
	for i := range 5 {
		published = append(published, srv.Publish(event(i)))
	}
	a := startRun(t, haOptions(t, srv.URL, "a"))
	a.stdout.WaitLines(t, 5)
	srv.LapseLock(haPath)
	a.stderr.WaitFor(t, "the loss", contains("HA lock lost"))
	for i := 5; i < 15; i++ {
		published = append(published, srv.Publish(event(i)))
	}
	a.stderr.WaitFor(t, "the lock taken back", func(s string) bool { return strings.Count(s, "HA lock acquired") == 2 })
	a.stdout.WaitLines(t, 15)
	if _, m := get(t, a, "/metrics"); !strings.Contains(m, "eventlog_ha_lock_lost_total 1") {
		t.Errorf("metrics: no eventlog_ha_lock_lost_total 1 in\n%s", m)
	}
	if err := a.stop(t); err != nil {
		t.Fatalf("got %v, want nil", err)
	}
	exactlyOnce(t, published, lineIndexes(t, a.stdout.String()))
	lost := ""
	for _, l := range strings.Split(a.stderr.String(), "\n") {
		if strings.Contains(l, "HA lock lost") {
			lost = l
		}
	}
	if !strings.Contains(lost, `"level":"ERROR"`) || !strings.Contains(lost, "renewal refused") {
		t.Errorf("got %q, want an ERROR line saying the renewal was refused", lost)
	}
}

// What the options get wrong is a ConfigError (exit 2), before or at the
// first lock request.
func TestHAConfigErrors(t *testing.T) {
	t.Parallel()
	srv := nomadtest.StartT(t, nomadtest.Options{}) // Nomad's 10 s minimum TTL
	tests := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"state file too", func(o *Options) { o.StateFile = filepath.Join(t.TempDir(), "state") }, "exclude each other"},
		{"bad path", func(o *Options) { o.HALock = "nomad/eventlog" }, "-ha-lock: variable path"},
		{"TTL below Nomad's minimum", func(o *Options) {}, "TTL must be between 10 seconds and 24 hours"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := haOptions(t, srv.URL, "a")
			o.Listen = ""
			tt.edit(&o)
			o.Stdout = io.Discard
			ctx, cancel := context.WithTimeout(context.Background(), hang)
			defer cancel()
			err := Run(ctx, o)
			var ce *ConfigError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want a ConfigError with %q", err, tt.want)
			}
		})
	}
}

// An index item that is not a raft index stops the holder with a
// ConfigError naming the variable, and the lock is released.
func TestHABadCheckpoint(t *testing.T) {
	t.Parallel()
	srv := haServer(t)
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/v1/var/"+haPath, strings.NewReader(`{"Items":{"index":"twelve"}}`))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("seeding the variable: %v %v", resp, err)
	}
	o := haOptions(t, srv.URL, "a")
	o.Stdout = io.Discard
	err := Run(context.Background(), o)
	var ce *ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), `holds index "twelve"`) {
		t.Errorf("got %v, want a ConfigError about the index item", err)
	}
	if v, _ := srv.Variable(haPath); v.LockID != "" {
		t.Errorf("the lock is still held after the failure")
	}
}

// failingWriter takes its first write and fails every later one, as a
// stdout whose reader went away.
type failingWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	first  chan struct{}
}

func (w *failingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.writes++; w.writes > 1 {
		return 0, syscall.EPIPE
	}
	close(w.first)
	return w.buf.Write(p)
}

// Stdout failing in HA mode: the checkpoint goes back to the last frame
// written, the lock is released, and Run says stdout was closed; the next
// holder would start right after what reached stdout.
func TestHAStdoutClosed(t *testing.T) {
	t.Parallel()
	srv := haServer(t)
	for i := range 5 {
		srv.Publish(event(i))
	}
	o := haOptions(t, srv.URL, "a")
	o.Listen = ""
	w := &failingWriter{first: make(chan struct{})}
	o.Stdout = w
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), o) }()
	select {
	case <-w.first:
	case <-time.After(hang):
		t.Fatal("nothing written")
	}
	for i := 5; i < 10; i++ {
		srv.Publish(event(i))
	}
	var err error
	select {
	case err = <-done:
	case <-time.After(hang):
		t.Fatal("Run did not stop after stdout failed")
	}
	if !errors.Is(err, syscall.EPIPE) || !strings.Contains(err.Error(), "stdout was closed") {
		t.Errorf("got %v, want stdout was closed", err)
	}
	w.mu.Lock()
	got := lineIndexes(t, w.buf.String())
	w.mu.Unlock()
	v, _ := srv.Variable(haPath)
	if last := got[len(got)-1]; v.Items["index"] != strconv.FormatUint(last, 10) || v.LockID != "" {
		t.Errorf("variable: index %q, lock %q; want %d, the last frame written, and no lock", v.Items["index"], v.LockID, last)
	}
}

// A handover between two frames of one index (Nomad sends a registration's
// Job and Evaluation events as two frames at one index): the checkpoint
// keeps how many frames of the index were written, and the new holder
// writes the rest of them, repeating none.
func TestHAHandoverWithinAnIndex(t *testing.T) {
	t.Parallel()
	srv := haServer(t)
	a1, a2, after := event(1), event(2), event(3)
	srv.PublishAt(5, a1)
	o := haOptions(t, srv.URL, "a")
	o.Topics = nil // the default topics: both frames' Job events
	a := startRun(t, o)
	a.stdout.WaitLines(t, 1)
	if err := a.stop(t); err != nil {
		t.Fatalf("a: %v", err)
	}
	if v, _ := srv.Variable(haPath); v.Items["index"] != "5" || v.Items["frames"] != "1" {
		t.Fatalf("the checkpoint after a's release: %v, want index 5, frames 1", v.Items)
	}
	srv.PublishAt(5, a2) // the index's second frame, after the handover
	srv.PublishAt(6, after)
	b := startRun(t, haOptions(t, srv.URL, "b"))
	got := b.stdout.WaitLines(t, 2)
	if err := b.stop(t); err != nil {
		t.Fatalf("b: %v", err)
	}
	if want := []string{expected(5, a2), expected(6, after)}; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("the new holder wrote\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
