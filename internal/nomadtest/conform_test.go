package nomadtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// The conformance test replays what a real Nomad 2.0.5 answered, request by
// request (testdata/nomad-2.0.5/transcripts, copied from the recording the
// README there names), against the fake, at the recorded moments on a fake
// clock, and compares every answer: status, the recorded headers, the body.
//
// What cannot be the same is compared by its relations instead: lock IDs
// (the server makes them up), raft indexes and timestamps (the recording's
// agent had other writes before; the fake starts at 1 and at synctest's
// epoch) are mapped one to one and in order, so an index or a time that
// repeats or moves on in the recording must do the same in the fake.
// Refused writes use up raft indexes in Nomad and not in the fake: the
// mapping keeps order, not gaps. The exceptions below are the only others.

// conformScenarios are the transcripts replayed, in their recorded order:
// each goes on from the variables the one before left (A3 to A5 work on
// A1's rec/lock-a).
var conformScenarios = []string{"A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8"}

// conformSkip names the steps whose answer is not compared (the request is
// still sent), each with why.
var conformSkip = map[string]string{
	// Nomad freed the lapsed lock 23.003 s after the acquire (2 × TTL +
	// LockDelay and its own few ms); the fake frees it at exactly 23 s, so
	// a GET 23.001 s after still saw the lock in Nomad and not in the fake.
	"A6/48": "sent 1 ms after the fake's lapse, 2 ms before Nomad's",
}

// statusAndHeaders compares the fake's status, Content-Type and leader
// headers (X-Nomad-Knownleader, X-Nomad-Lastcontact) with Nomad's answer at
// st, one difference a line.
func statusAndHeaders(rr *httptest.ResponseRecorder, st TranscriptStep) []string {
	want := st.Response
	var diffs []string
	if rr.Code != want.Status {
		diffs = append(diffs, fmt.Sprintf("status %d, Nomad %d", rr.Code, want.Status))
	}
	for _, k := range []string{"Content-Type", "X-Nomad-Knownleader", "X-Nomad-Lastcontact"} {
		if got := rr.Header().Get(k); got != want.Headers[k] {
			diffs = append(diffs, fmt.Sprintf("header %s %q, Nomad %q", k, got, want.Headers[k]))
		}
	}
	return diffs
}

// ordered is a one-to-one, order-keeping map from recorded values to the
// fake's (indexes, timestamps).
type ordered struct {
	what string
	m    map[uint64]uint64
}

// match maps rec to got, or says how the fake broke the recorded relation.
func (o *ordered) match(rec, got uint64) error {
	if rec == 0 || got == 0 {
		if rec != got {
			return fmt.Errorf("%s %d in Nomad, %d in the fake", o.what, rec, got)
		}
		return nil
	}
	if g, ok := o.m[rec]; ok {
		if g != got {
			return fmt.Errorf("%s: Nomad repeats %d here, the fake says %d where it said %d before", o.what, rec, got, g)
		}
		return nil
	}
	for r, g := range o.m {
		if g == got || (r < rec) != (g < got) {
			return fmt.Errorf("%s: Nomad's %d and %d are ordered otherwise than the fake's %d and %d", o.what, r, rec, g, got)
		}
	}
	o.m[rec] = got
	return nil
}

// conformer holds the mappings of one replay.
type conformer struct {
	mu      sync.Mutex
	index   ordered
	time    ordered
	lockIDs map[string]string // recorded → the fake's
}

func newConformer() *conformer {
	return &conformer{
		index:   ordered{what: "index", m: map[uint64]uint64{}},
		time:    ordered{what: "time", m: map[uint64]uint64{}},
		lockIDs: map[string]string{},
	}
}

var uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// request turns a recorded request into the fake's: lock IDs and the
// indexes in ?cas= and ?index= become the fake's.
func (c *conformer) request(method, path string, body json.RawMessage) *http.Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	path = regexp.MustCompile(`(cas|index)=(\d+)`).ReplaceAllStringFunc(path, func(kv string) string {
		k, v, _ := strings.Cut(kv, "=")
		n, _ := strconv.ParseUint(v, 10, 64)
		g, ok := c.index.m[n]
		if !ok {
			// A stale or future index never answered: keep its place.
			g = c.nearest(n)
		}
		return k + "=" + strconv.FormatUint(g, 10)
	})
	b := uuidRE.ReplaceAllFunc(body, func(id []byte) []byte {
		if g, ok := c.lockIDs[string(id)]; ok {
			return []byte(g)
		}
		return id // an ID Nomad never gave out ("a wrong lock ID")
	})
	if string(b) == "null" {
		b = nil
	}
	return httptest.NewRequest(method, path, bytes.NewReader(b))
}

// nearest maps an index never seen to the fake's index of the nearest
// lower one seen (c.mu held): a stale cas stays stale.
func (c *conformer) nearest(n uint64) uint64 {
	var best, got uint64
	for r, g := range c.index.m {
		if r <= n && r >= best {
			best, got = r, g
		}
	}
	return got
}

// compare compares the fake's answer with the recorded one.
func (c *conformer) compare(st TranscriptStep, rr *httptest.ResponseRecorder) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	want := st.Response
	var diffs []string
	if rr.Code != want.Status {
		diffs = append(diffs, fmt.Sprintf("status %d, Nomad %d", rr.Code, want.Status))
	}
	for k, v := range want.Headers {
		got := rr.Header().Get(k)
		if k == "X-Nomad-Index" && got != "" {
			r, _ := strconv.ParseUint(v, 10, 64)
			g, _ := strconv.ParseUint(got, 10, 64)
			if err := c.index.match(r, g); err != nil {
				diffs = append(diffs, "X-Nomad-Index: "+err.Error())
			}
			continue
		}
		if got != v {
			diffs = append(diffs, fmt.Sprintf("header %s %q, Nomad %q", k, got, v))
		}
	}
	if _, ok := want.Headers["X-Nomad-Index"]; !ok && rr.Header().Get("X-Nomad-Index") != "" {
		diffs = append(diffs, "X-Nomad-Index set, Nomad sends none")
	}

	var text string
	if err := json.Unmarshal(want.Body, &text); err == nil {
		// Recorded as text: compare the bytes.
		if got := rr.Body.String(); got != text {
			diffs = append(diffs, fmt.Sprintf("body %q, Nomad %q", got, text))
		}
		return diffs
	}
	var rec, got map[string]any
	dec := json.NewDecoder(bytes.NewReader(want.Body))
	dec.UseNumber()
	if err := dec.Decode(&rec); err != nil {
		return append(diffs, "recorded body: "+err.Error())
	}
	dec = json.NewDecoder(bytes.NewReader(rr.Body.Bytes()))
	dec.UseNumber()
	if err := dec.Decode(&got); err != nil {
		return append(diffs, fmt.Sprintf("body %q is not JSON: %v", rr.Body.String(), err))
	}
	return append(diffs, c.compareVar(rec, got)...)
}

// compareVar compares two variables as JSON objects (c.mu held).
func (c *conformer) compareVar(rec, got map[string]any) []string {
	var diffs []string
	for k := range got {
		if _, ok := rec[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("key %s, which Nomad does not send", k))
		}
	}
	for k, rv := range rec {
		gv, ok := got[k]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("no key %s, Nomad sends %v", k, rv))
			continue
		}
		switch k {
		case "CreateIndex", "ModifyIndex", "CreateTime", "ModifyTime":
			o := &c.index
			if strings.HasSuffix(k, "Time") {
				o = &c.time
			}
			r, _ := strconv.ParseUint(fmt.Sprint(rv), 10, 64)
			g, _ := strconv.ParseUint(fmt.Sprint(gv), 10, 64)
			if err := o.match(r, g); err != nil {
				diffs = append(diffs, k+": "+err.Error())
			}
		case "Lock":
			rl, _ := rv.(map[string]any)
			gl, _ := gv.(map[string]any)
			if rid, ok := rl["ID"].(string); ok {
				gid, _ := gl["ID"].(string)
				if m, seen := c.lockIDs[rid]; seen && m != gid {
					diffs = append(diffs, fmt.Sprintf("Lock.ID %s where the fake gave %s for Nomad's %s", gid, m, rid))
				}
				c.lockIDs[rid] = gid
				rl, gl = without(rl, "ID"), without(gl, "ID")
			}
			if fmt.Sprint(rl) != fmt.Sprint(gl) {
				diffs = append(diffs, fmt.Sprintf("Lock %v, Nomad %v", gl, rl))
			}
		default:
			if fmt.Sprint(rv) != fmt.Sprint(gv) {
				diffs = append(diffs, fmt.Sprintf("%s %v, Nomad %v", k, gv, rv))
			}
		}
	}
	return diffs
}

// without is m less key, m left as it is.
func without[V any](m map[string]V, key string) map[string]V {
	out := map[string]V{}
	for k, v := range m {
		if k != key {
			out[k] = v
		}
	}
	return out
}

func TestConformsToNomadVariables(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Nomad's own defaults (Options' zero values): the recording ran
		// with them.
		s := NewWithListener(nopListener{}, Options{})
		defer s.Close()
		c := newConformer()
		for _, name := range conformScenarios {
			start := time.Now()
			var wg sync.WaitGroup
			for i, st := range Transcript(t, name) {
				if st.Request == nil {
					continue
				}
				time.Sleep(time.Until(start.Add(time.Duration(st.T * float64(time.Second)))))
				synctest.Wait() // earlier requests have answered what they could
				req := c.request(st.Request.Method, st.Request.Path, st.Request.Body)
				step := fmt.Sprintf("%s/%d", name, i)
				wg.Go(func() {
					rr := httptest.NewRecorder()
					s.srv.Handler.ServeHTTP(rr, req)
					if why, ok := conformSkip[step]; ok {
						t.Logf("%s (%s): not compared: %s", step, st.Note, why)
						return
					}
					for _, d := range c.compare(st, rr) {
						t.Errorf("%s (%s): %s", step, st.Note, d)
					}
				})
			}
			wg.Wait()
		}
	})
}

// nopListener lets NewWithListener build a server whose handler the test
// calls directly, inside the synctest bubble.
type nopListener struct{}

func (nopListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (nopListener) Close() error              { return nil }
func (nopListener) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
