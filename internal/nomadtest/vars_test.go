package nomadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const lockPath = "nomad/jobs/eventlog/lock"

// answer is one HTTP answer: status, body, X-Nomad-Index.
type answer struct {
	status int
	body   string
	index  uint64
}

// call sends a variable request with token and returns the answer.
func call(t *testing.T, s *Server, method, query, token, body string) answer {
	t.Helper()
	a, err := callCtx(context.Background(), s, method, query, token, body)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func callCtx(ctx context.Context, s *Server, method, query, token, body string) (answer, error) {
	u := s.URL + "/v1/var/" + lockPath
	if query != "" {
		u += "?" + query
	}
	req, err := http.NewRequestWithContext(ctx, method, u, strings.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	if token != "" {
		req.Header.Set("X-Nomad-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	idx, _ := strconv.ParseUint(resp.Header.Get("X-Nomad-Index"), 10, 64)
	return answer{resp.StatusCode, string(b), idx}, err
}

// recorded reads a recorded answer: a .json file is a 200's body; a .txt
// file is the body, then "HTTP NNN".
func recorded(t *testing.T, name string) answer {
	t.Helper()
	b, err := os.ReadFile("testdata/nomad-2.0.5/" + name)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if strings.HasSuffix(name, ".json") {
		return answer{status: 200, body: s}
	}
	i := strings.LastIndex(s, "HTTP ")
	code, err := strconv.Atoi(strings.TrimSpace(s[i+5:]))
	if err != nil {
		t.Fatalf("%s: no status line: %v", name, err)
	}
	return answer{status: code, body: strings.TrimRight(s[:i], " \n")}
}

var (
	indexesRe = regexp.MustCompile(`"(CreateIndex|ModifyIndex|CreateTime|ModifyTime)":[0-9]+`)
	lockIDRe  = regexp.MustCompile(`"ID":"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"`)
)

// shape is a body with its indexes, times and lock ID replaced, so that a
// recorded answer and the fake's compare byte for byte otherwise.
func shape(body string) string {
	return lockIDRe.ReplaceAllString(indexesRe.ReplaceAllString(body, `"$1":N`), `"ID":"UUID"`)
}

type varBody struct {
	CreateIndex, ModifyIndex uint64
	Items                    map[string]string
	Lock                     *struct{ ID, TTL, LockDelay string }
}

func decodeVar(t *testing.T, body string) varBody {
	t.Helper()
	var v varBody
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("answer %q: %v", body, err)
	}
	return v
}

// The fake answers the recorded requests as Nomad 2.0.5 did: same status,
// same fields in the same order, same bodies but for indexes, times and
// the lock ID.
func TestVarLockAnswersAsRecorded(t *testing.T) {
	t.Parallel()
	s := StartT(t, Options{})
	const acquire = `{"Items":{"index":"123"},"Lock":{"TTL":"15s","LockDelay":"5s"}}`
	acq := call(t, s, "PUT", "lock-acquire", "", acquire)
	id := decodeVar(t, acq.body).Lock.ID
	type step struct {
		name string
		got  answer
		file string
	}
	steps := []step{
		{"acquire", acq, "var-lock-acquire.json"},
		{"acquire while held", call(t, s, "PUT", "lock-acquire", "", acquire), "var-lock-acquire-held.txt"},
		{"renew", call(t, s, "PUT", "lock-renew", "", `{"Lock":{"ID":"`+id+`"}}`), "var-lock-renew.txt"},
		{"read", call(t, s, "GET", "", "", ""), "var-lock-read.json"},
		{"write with a lock block", call(t, s, "PUT", fmt.Sprintf("cas=%d", decodeVar(t, acq.body).ModifyIndex), "",
			`{"Items":{"index":"124"},"Lock":{"ID":"`+id+`","TTL":"10s","LockDelay":"3s"}}`), "var-lock-write-with-lock-block.txt"},
		{"release", call(t, s, "PUT", "lock-release", "", `{"Lock":{"ID":"`+id+`"}}`), "var-lock-release.txt"},
	}
	for _, st := range steps {
		want := recorded(t, st.file)
		if st.got.status != want.status || shape(st.got.body) != shape(want.body) {
			t.Errorf("%s:\n got %d %s\nwant %d %s", st.name, st.got.status, shape(st.got.body), want.status, shape(want.body))
		}
	}
	// Like the recording, the release moved the ModifyIndex on.
	if rel := decodeVar(t, steps[len(steps)-1].got.body); rel.ModifyIndex <= rel.CreateIndex {
		t.Errorf("release: ModifyIndex %d, want it above CreateIndex %d", rel.ModifyIndex, rel.CreateIndex)
	}
	// The README's other answer: a release with Items.
	acq = call(t, s, "PUT", "lock-acquire", "", `{"Lock":{"TTL":"15s","LockDelay":"5s"}}`)
	got := call(t, s, "PUT", "lock-release", "", `{"Items":{"index":"1"},"Lock":{"ID":"`+decodeVar(t, acq.body).Lock.ID+`"}}`)
	if got.status != 400 || !strings.Contains(got.body, "lock release operation doesn't take variable items") {
		t.Errorf("release with items: got %d %q, want 400 saying it takes no items", got.status, got.body)
	}
}

// Nomad's rules for the items of a locked variable: only its holder writes
// them, with a CAS index that must be the variable's, and the write resets
// the lock's TTL and delay to the defaults.
func TestVarWritesToALockedVariable(t *testing.T) {
	t.Parallel()
	s := StartT(t, Options{})
	acq := decodeVar(t, call(t, s, "PUT", "lock-acquire", "a", `{"Lock":{"TTL":"40s","LockDelay":"5s"}}`).body)
	id := acq.Lock.ID
	tests := []struct {
		name   string
		query  string
		body   string
		status int
		want   string // in the body
	}{
		{"without the lock ID", fmt.Sprintf("cas=%d", acq.ModifyIndex), `{"Items":{"index":"5"}}`, 409, `"Path":"` + lockPath},
		{"with another lock ID", fmt.Sprintf("cas=%d", acq.ModifyIndex), `{"Items":{"index":"5"},"Lock":{"ID":"x"}}`, 409, `"Path"`},
		{"with a stale CAS index", fmt.Sprintf("cas=%d", acq.ModifyIndex-1), `{"Items":{"index":"5"},"Lock":{"ID":"` + id + `"}}`, 409, `"ModifyIndex":` + fmt.Sprint(acq.ModifyIndex)},
		{"with no items", fmt.Sprintf("cas=%d", acq.ModifyIndex), `{"Lock":{"ID":"` + id + `"}}`, 400, "empty variables are invalid"},
		{"by its holder", fmt.Sprintf("cas=%d", acq.ModifyIndex), `{"Items":{"index":"5"},"Lock":{"ID":"` + id + `"}}`, 200, `"Lock":{"TTL":"15s","LockDelay":"15s","ID":"` + id + `"}`},
	}
	for _, tt := range tests {
		got := call(t, s, "PUT", tt.query, "a", tt.body)
		if got.status != tt.status || !strings.Contains(got.body, tt.want) {
			t.Errorf("%s: got %d %s, want %d with %s", tt.name, got.status, got.body, tt.status, tt.want)
		}
	}
	v, _ := s.Variable(lockPath)
	if v.Items["index"] != "5" || v.TTL != 15*time.Second || v.LockDelay != 15*time.Second {
		t.Errorf("after the holder's write: got items %v, TTL %s, delay %s; want index 5 and Nomad's 15s defaults", v.Items, v.TTL, v.LockDelay)
	}
	// The write did not re-arm the TTL timer; the next renewal arms it with
	// twice the TTL the variable holds now, 15 s, not the 40 s asked.
	before := time.Now()
	if got := call(t, s, "PUT", "lock-renew", "a", `{"Lock":{"ID":"`+id+`"}}`); got.status != 200 {
		t.Fatalf("renew: got %d %s", got.status, got.body)
	}
	after := time.Now()
	v, _ = s.Variable(lockPath)
	if v.Expires.Before(before.Add(30*time.Second)) || v.Expires.After(after.Add(30*time.Second)) {
		t.Errorf("after a renewal the lock lapses at %s, want twice the 15 s TTL after the renewal (%s to %s)",
			v.Expires.Format(time.StampMilli), before.Add(30*time.Second).Format(time.StampMilli), after.Add(30*time.Second).Format(time.StampMilli))
	}
	// Released, the old holder's write is refused: the lock ID fences it.
	if got := call(t, s, "PUT", "lock-release", "a", `{"Lock":{"ID":"`+id+`"}}`); got.status != 200 {
		t.Fatalf("release: got %d %s", got.status, got.body)
	}
	v, _ = s.Variable(lockPath)
	got := call(t, s, "PUT", fmt.Sprintf("cas=%d", v.ModifyIndex), "a", `{"Items":{"index":"6"},"Lock":{"ID":"`+id+`"}}`)
	if got.status != 409 {
		t.Errorf("write with the released lock's ID: got %d %s, want 409", got.status, got.body)
	}
}

// A lock not renewed lapses after twice its TTL: renewals are refused, and
// nobody can acquire it until the lock delay armed at the acquire has
// passed; then it is removed and another caller gets it, and a blocking
// read wakes up.
func TestVarLockLapseAndDelay(t *testing.T) {
	t.Parallel()
	t.Run("twice the TTL", func(t *testing.T) {
		t.Parallel()
		s := StartT(t, Options{})
		before := time.Now()
		call(t, s, "PUT", "lock-acquire", "a", `{"Lock":{"TTL":"10s","LockDelay":"3s"}}`)
		after := time.Now()
		v, _ := s.Variable(lockPath)
		if v.Expires.Before(before.Add(20*time.Second)) || v.Expires.After(after.Add(20*time.Second)) {
			t.Errorf("lapses at %s, want twice the 10 s TTL after the acquire", v.Expires.Format(time.StampMilli))
		}
	})
	t.Run("during the delay", func(t *testing.T) {
		t.Parallel()
		s := StartT(t, Options{})
		id := decodeVar(t, call(t, s, "PUT", "lock-acquire", "a", `{"Lock":{"TTL":"10s","LockDelay":"1h"}}`).body).Lock.ID
		s.LapseLock(lockPath)
		if got := call(t, s, "PUT", "lock-renew", "a", `{"Lock":{"ID":"`+id+`"}}`); got.status != 409 {
			t.Errorf("renew after the lapse: got %d %s, want 409", got.status, got.body)
		}
		if got := call(t, s, "PUT", "lock-acquire", "b", `{"Lock":{"TTL":"10s"}}`); got.status != 409 {
			t.Errorf("acquire during the lock delay: got %d %s, want 409", got.status, got.body)
		}
		if v, _ := s.Variable(lockPath); v.LockID != id || !v.Lapsed {
			t.Errorf("during the delay the variable holds lock %q (lapsed %v), want the old one, lapsed", v.LockID, v.Lapsed)
		}
	})
	t.Run("after the delay", func(t *testing.T) {
		t.Parallel()
		s := StartT(t, Options{})
		acq := decodeVar(t, call(t, s, "PUT", "lock-acquire", "a", `{"Lock":{"TTL":"10s","LockDelay":"50ms"}}`).body)
		read := make(chan answer, 1)
		go func() {
			a, _ := callCtx(context.Background(), s, "GET", fmt.Sprintf("index=%d&wait=1m", acq.ModifyIndex), "b", "")
			read <- a
		}()
		s.LapseLock(lockPath)
		select {
		case got := <-read:
			if got.status != 200 || strings.Contains(got.body, `"Lock"`) || got.index <= acq.ModifyIndex {
				t.Errorf("blocking read: got %d %s (index %d), want the variable without its lock, past index %d", got.status, got.body, got.index, acq.ModifyIndex)
			}
		case <-time.After(hang):
			t.Fatal("the blocking read never woke up when the lock went")
		}
		if got := call(t, s, "PUT", "lock-acquire", "b", `{"Lock":{"TTL":"10s"}}`); got.status != 200 {
			t.Errorf("acquire after the delay: got %d %s, want 200", got.status, got.body)
		}
	})
}

// The bounds Nomad puts on a lock's TTL, with the test server's lower
// minimum as an option.
func TestVarLockTTLBounds(t *testing.T) {
	t.Parallel()
	s := StartT(t, Options{})
	got := call(t, s, "PUT", "lock-acquire", "", `{"Lock":{"TTL":"5s"}}`)
	if got.status != 400 || !strings.Contains(got.body, "TTL must be between 10 seconds and 24 hours") {
		t.Errorf("TTL 5s: got %d %q, want Nomad's 400", got.status, got.body)
	}
	if got := call(t, s, "PUT", "lock-acquire", "", `{"Lock":{"TTL":"25h"}}`); got.status != 400 {
		t.Errorf("TTL 25h: got %d %q, want 400", got.status, got.body)
	}
	short := StartT(t, Options{MinLockTTL: time.Second})
	if got := call(t, short, "PUT", "lock-acquire", "", `{"Lock":{"TTL":"1s","LockDelay":"1s"}}`); got.status != 200 {
		t.Errorf("TTL 1s with MinLockTTL 1s: got %d %q, want 200", got.status, got.body)
	}
}

// A partition holds every request of one token, streams included, and
// leaves the others alone; healed, what was held goes on.
func TestPartition(t *testing.T) {
	t.Parallel()
	s := StartT(t, Options{})
	cut, err := subscribe(t, s, "index=0&topic=Job", "cut")
	if err != nil {
		t.Fatal(err)
	}
	cut.line() // {}
	other, err := subscribe(t, s, "index=0&topic=Job", "other")
	if err != nil {
		t.Fatal(err)
	}
	other.line()
	s.Partition("cut")
	held := make(chan answer, 1)
	go func() {
		a, err := callCtx(context.Background(), s, "PUT", "lock-acquire", "cut", `{"Lock":{"TTL":"10s"}}`)
		if err != nil {
			a.body = err.Error()
		}
		held <- a
	}()
	idx := s.Publish(ev("Job", "web", "default"))
	if got := other.frames(t, 1)[0].Index; got != idx {
		t.Fatalf("the other subscriber: got frame %d, want %d", got, idx)
	}
	if got := call(t, s, "PUT", "lock-acquire", "other", `{"Lock":{"TTL":"10s"}}`); got.status != 200 {
		t.Fatalf("the other caller's acquire during the partition: got %d %s", got.status, got.body)
	}
	select {
	case a := <-held:
		t.Fatalf("a partitioned request was answered: %d %s", a.status, a.body)
	default:
	}
	s.Heal("cut")
	if got := cut.frames(t, 1)[0].Index; got != idx {
		t.Errorf("the partitioned stream after healing: got frame %d, want %d", got, idx)
	}
	select {
	case a := <-held:
		if a.status != 409 {
			t.Errorf("the held acquire: got %d %s, want 409 (the other caller holds the lock)", a.status, a.body)
		}
	case <-time.After(hang):
		t.Fatal("the held request was never answered after healing")
	}
	// A held request whose caller gave up was never received.
	s.Partition("cut")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := callCtx(ctx, s, "PUT", "lock-release", "cut", `{"Lock":{"ID":"x"}}`)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled held request: got %v", err)
	}
	s.Heal("cut")
	for _, op := range s.VarOps() {
		if op.Op == "lock-release" {
			t.Errorf("the given-up release reached the store: %+v", op)
		}
	}
}

// var-missing-blocking.txt: a blocking read of a missing variable answers
// at once below the variables' index and waits from it on; with ACLs on
// (var-lock-read-acl.txt) only the management token reads the Lock.
func TestVarMissingBlockingAndHiddenLock(t *testing.T) {
	t.Parallel()
	s := StartT(t, Options{ManagementToken: "management"})
	get := func(path, token string) (int, string, time.Duration) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, s.URL+path, nil)
		if token != "" {
			req.Header.Set("X-Nomad-Token", token)
		}
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("X-Nomad-Index") + " " + string(b), time.Since(start)
	}
	put := func(path, body string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, s.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	put("/v1/var/other", `{"Items":{"a":"1"}}`)
	code, body, _ := get("/v1/var/missing", "")
	table := strings.Fields(body)[0]
	if code != http.StatusNotFound {
		t.Fatalf("missing: %d %s", code, body)
	}
	if code, _, _ := get("/v1/var/missing?index=1&wait=5s", ""); code != http.StatusNotFound {
		t.Errorf("below the table index: %d, want 404 at once", code)
	}
	// At the table index it waits: a variable written meanwhile ends the
	// wait (the test does not time the wait itself).
	done := make(chan int, 1)
	go func() { c, _, _ := get("/v1/var/missing?index="+table+"&wait=1m", ""); done <- c }()
	select {
	case c := <-done:
		t.Fatalf("at the table index it answered %d without waiting", c)
	default:
	}
	put("/v1/var/missing", `{"Items":{"b":"2"}}`)
	if c := <-done; c != http.StatusOK {
		t.Errorf("the variable written during the wait: %d, want 200", c)
	}
	put("/v1/var/locked?lock-acquire", `{"Items":{"address":"x"},"Lock":{"TTL":"15s"}}`)
	if _, body, _ := get("/v1/var/locked", "a-workload-identity"); strings.Contains(body, `"Lock"`) {
		t.Errorf("a workload identity read the Lock: %s", body)
	}
	if _, body, _ := get("/v1/var/locked", "management"); !strings.Contains(body, `"Lock"`) {
		t.Errorf("the management token did not read the Lock: %s", body)
	}
}
