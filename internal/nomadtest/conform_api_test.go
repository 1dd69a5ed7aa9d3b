package nomadtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// The job API's and the ACL refusals' conformance: transcripts C and E
// (testdata/nomad-2.0.5/transcripts) replayed against the fake's handler at
// their recorded moments, on a synctest clock.
//
// The recorder drove Nomad through endpoints the fake does not serve; the
// replay drives the fake through its Go API instead, and does not compare
// those answers: PUT /v1/namespace/:name is AddNamespace, POST /v1/jobs is
// RegisterJob of the posted job (B5's three registrations come first: C's
// lists hold them; the fake's own POST /v1/jobs is compared with F's in
// conform_jobs_test.go). Not replayed at all, because the fake has no such
// endpoint:
//   - D (/v1/service/:name, /v1/services, /v1/job/:id/allocations): no
//     /v1/services or job-allocation endpoints here; D's service reads are
//     replayed in services_test.go, and against internal/catalogtest (its
//     conform_test.go), the catalog fake the cluster package uses.
//   - E's /v1/acl/bootstrap, /v1/acl/policy, /v1/acl/token and
//     /v1/service/rec-svc steps: no ACL or service endpoints.
//   - F (/v1/jobs/parse, PUT /v1/jobs with EnforceIndex, /v1/job/:id/plan):
//     replayed in conform_jobs_test.go, but for the plan (no plan
//     endpoint here).
//   - G (/v1/node/:id/allocations): replayed in allocs_test.go.
//
// Compared for every GET: the status, Content-Type, the text of a text
// answer, which of X-Nomad-Index, X-Nomad-Knownleader and
// X-Nomad-Lastcontact are sent (the last two by value), and how long a
// blocking query took (at most Nomad's time, and not more than 0.3 s less:
// Nomad adds up to wait/16 to a wait). X-Nomad-Index is compared by what it
// is in Nomad's answer, since Nomad's scheduler writes the jobs (their
// Status, JobSummary and ModifyIndex) at indexes the fake has no
// counterpart for:
//   - a job read: the job's ModifyIndex;
//   - the index= a blocking list asked with: the same in the fake (the
//     fake's counterpart of that index);
//   - a registration's index: that registration's index in the fake;
//   - otherwise (the scheduler's later writes): the fake's jobs table index,
//     its last job write.
// Of a job list: the jobs, by namespace and ID, in order; every stub's keys;
// and the values the fake has from the registered job (ID, Namespace, Name,
// Type, Datacenters, Meta). Of a job: ID, Namespace, Name, Type, Meta.
//
// Exceptions, each in one line:
//   - stubs have no JobSummary: the fake runs no scheduler (nothing in the
//     project reads it).
//   - a job's other keys and values are what the test registered:
//     RegisterJob stores the job as given, without Nomad's defaults.
//   - E/11: Nomad's fresh variables table has index 1, the fake's 0 (no
//     write yet): only the header's presence is compared.
//   - E/15, E/20: Authorize decides per token, not per path and capability:
//     the read-only token's reads of rec/locked are refused in the fake.

var indexParam = regexp.MustCompile(`index=(\d+)`)

// jobsReplay holds what one replay of B5's registrations and C knows.
type jobsReplay struct {
	mu       sync.Mutex
	s        *Server
	regs     map[uint64]uint64 // a registration's index in Nomad → the fake's
	lastReg  uint64            // Nomad's index of the last registration
	answers  map[uint64]uint64 // an X-Nomad-Index Nomad answered → the fake's, at the time
	lastFake uint64            // the fake's last registration
}

// register applies a POST /v1/jobs to the fake.
func (j *jobsReplay) register(t *testing.T, st TranscriptStep) {
	var req struct{ Job map[string]any }
	if err := json.Unmarshal(st.Request.Body, &req); err != nil {
		t.Fatal(err)
	}
	var resp struct{ Index uint64 }
	if err := json.Unmarshal(st.Response.Body, &resp); err != nil {
		t.Fatal(err)
	}
	// Held across the registration: a blocking list it wakes is compared
	// only once the registration's index is recorded here.
	j.mu.Lock()
	defer j.mu.Unlock()
	got := j.s.RegisterJob(req.Job)
	j.regs[resp.Index], j.lastReg, j.lastFake = got, resp.Index, got
}

// request turns a recorded GET into the fake's: index= becomes the fake's
// counterpart of the answer it came from.
func (j *jobsReplay) request(st TranscriptStep) (*http.Request, uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	var asked uint64
	path := indexParam.ReplaceAllStringFunc(st.Request.Path, func(kv string) string {
		n, _ := strconv.ParseUint(strings.TrimPrefix(kv, "index="), 10, 64)
		asked = n
		return "index=" + strconv.FormatUint(j.answers[n], 10)
	})
	req := httptest.NewRequest(st.Request.Method, path, nil)
	for k, v := range st.Request.Headers {
		req.Header.Set(k, v)
	}
	return req, asked
}

// compare compares the fake's answer to a GET with Nomad's.
func (j *jobsReplay) compare(st TranscriptStep, asked uint64, rr *httptest.ResponseRecorder, took time.Duration) []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	want := st.Response
	diffs := statusAndHeaders(rr, st)
	if asked != 0 {
		if rec := time.Duration(st.Elapsed * float64(time.Second)); took > rec || took < rec-300*time.Millisecond {
			diffs = append(diffs, fmt.Sprintf("answered after %v, Nomad after %v", took, rec))
		}
	}
	var text string
	if json.Unmarshal(want.Body, &text) == nil {
		if got := rr.Body.String(); got != text {
			diffs = append(diffs, fmt.Sprintf("body %q, Nomad %q", got, text))
		}
	}
	recIdx, hasRec := want.Headers["X-Nomad-Index"]
	gotIdx := rr.Header().Get("X-Nomad-Index")
	if !hasRec || gotIdx == "" {
		if hasRec != (gotIdx != "") {
			diffs = append(diffs, fmt.Sprintf("X-Nomad-Index %q, Nomad %q", gotIdx, recIdx))
		}
		return diffs
	}
	r, _ := strconv.ParseUint(recIdx, 10, 64)
	g, _ := strconv.ParseUint(gotIdx, 10, 64)
	var job struct{ ModifyIndex *uint64 }
	_ = json.Unmarshal(want.Body, &job)
	var wantG uint64
	var why string
	switch fake, ok := j.regs[r]; {
	case job.ModifyIndex != nil:
		if *job.ModifyIndex != r {
			diffs = append(diffs, fmt.Sprintf("recording: X-Nomad-Index %d is not the job's ModifyIndex %d", r, *job.ModifyIndex))
		}
		var gj struct{ ModifyIndex uint64 }
		_ = json.Unmarshal(rr.Body.Bytes(), &gj)
		wantG, why = gj.ModifyIndex, "the job's ModifyIndex"
	case asked != 0 && r == asked:
		wantG, why = j.answers[asked], "the index asked"
	case ok:
		wantG, why = fake, "the registration's index"
	default:
		if r <= j.lastReg {
			diffs = append(diffs, fmt.Sprintf("recording: X-Nomad-Index %d is not above the last registration's %d", r, j.lastReg))
		}
		wantG, why = j.lastFake, "the jobs table's index"
	}
	if g != wantG {
		diffs = append(diffs, fmt.Sprintf("X-Nomad-Index %d, want %d (%s, as Nomad's %d)", g, wantG, why, r))
	}
	j.answers[r] = g
	return append(diffs, compareJobs(want.Body, rr.Body.Bytes())...)
}

// compareJobs compares a job list or a job (JSON) with Nomad's.
func compareJobs(rec, got []byte) []string {
	var diffs []string
	values := func(m map[string]any, keys ...string) string {
		var b strings.Builder
		for _, k := range keys {
			if v, ok := m[k]; ok {
				fmt.Fprintf(&b, "%s=%v ", k, v)
			}
		}
		return b.String()
	}
	var rl, gl []map[string]any
	if json.Unmarshal(rec, &rl) == nil {
		if err := json.Unmarshal(got, &gl); err != nil {
			return []string{fmt.Sprintf("body %.200q is not a list: %v", got, err)}
		}
		ids := func(l []map[string]any) (out []string) {
			for _, s := range l {
				out = append(out, fmt.Sprintf("%v/%v", s["Namespace"], s["ID"]))
			}
			return out
		}
		if !slices.Equal(ids(rl), ids(gl)) {
			return []string{fmt.Sprintf("jobs %v, Nomad %v", ids(gl), ids(rl))}
		}
		for i := range rl {
			keys := func(m map[string]any) (out []string) {
				for k := range m {
					if k != "JobSummary" { // exception: no scheduler
						out = append(out, k)
					}
				}
				sort.Strings(out)
				return out
			}
			if rk, gk := keys(rl[i]), keys(gl[i]); !slices.Equal(rk, gk) {
				diffs = append(diffs, fmt.Sprintf("stub %s: keys %v, Nomad %v", ids(rl)[i], gk, rk))
			}
			fields := []string{"ID", "Namespace", "Name", "Type", "Datacenters", "Meta"}
			if rv, gv := values(rl[i], fields...), values(gl[i], fields...); rv != gv {
				diffs = append(diffs, fmt.Sprintf("stub %s: %s, Nomad %s", ids(rl)[i], gv, rv))
			}
		}
		return diffs
	}
	var rj, gj map[string]any
	if json.Unmarshal(rec, &rj) != nil {
		return nil // a text answer, compared already
	}
	if err := json.Unmarshal(got, &gj); err != nil {
		return []string{fmt.Sprintf("body %.200q is not a job: %v", got, err)}
	}
	fields := []string{"ID", "Namespace", "Name", "Type", "Meta"}
	if rv, gv := values(rj, fields...), values(gj, fields...); rv != gv {
		diffs = append(diffs, fmt.Sprintf("job: %s, Nomad %s", gv, rv))
	}
	return diffs
}

func TestConformsToNomadJobs(t *testing.T) {
	var regs []TranscriptStep // B5's registrations: C's lists hold those jobs
	for _, st := range Transcript(t, "B5") {
		if st.Request != nil && st.Request.Method == http.MethodPost && strings.HasPrefix(st.Request.Path, "/v1/jobs") {
			regs = append(regs, st)
		}
	}
	steps := Transcript(t, "C")
	synctest.Test(t, func(t *testing.T) {
		s := NewWithListener(nopListener{}, Options{})
		defer s.Close()
		s.AddNamespace("other")
		j := &jobsReplay{s: s, regs: map[uint64]uint64{}, answers: map[uint64]uint64{}}
		for _, st := range regs {
			j.register(t, st)
		}
		start := time.Now()
		var wg sync.WaitGroup
		for i, st := range steps {
			time.Sleep(time.Until(start.Add(time.Duration(st.T * float64(time.Second)))))
			synctest.Wait()
			step := fmt.Sprintf("C/%d (%s)", i, st.Note)
			switch {
			case st.Request.Method == http.MethodPut && strings.HasPrefix(st.Request.Path, "/v1/namespace/"):
				continue // namespace other exists since B5
			case st.Request.Method == http.MethodPost && strings.HasPrefix(st.Request.Path, "/v1/jobs"):
				j.register(t, st)
				continue
			case st.Request.Method != http.MethodGet:
				t.Fatalf("%s: no counterpart in the fake", step)
			}
			req, asked := j.request(st)
			wg.Go(func() {
				rr := httptest.NewRecorder()
				began := time.Now()
				s.srv.Handler.ServeHTTP(rr, req)
				for _, d := range j.compare(st, asked, rr, time.Since(began)) {
					t.Errorf("%s: %s", step, d)
				}
			})
		}
		wg.Wait()
	})
}

// TestConformsToNomadACL replays E's requests to endpoints the fake serves
// with a fake that accepts only E's management token, and compares them as
// the variables' conformance does (X-Nomad-Index, when sent, mapped one to
// one).
func TestConformsToNomadACL(t *testing.T) {
	const management = "42c92abe-ac54-2991-3558-41db47ce17d3" // E's bootstrap token
	skip := map[int]string{
		0:  "no /v1/acl/bootstrap in the fake",
		3:  "the fake's services are what a test sets, not a job's (services_test.go replays D's)",
		7:  "the fake's services are what a test sets, not a job's (services_test.go replays D's)",
		12: "no /v1/acl/policy in the fake",
		13: "no /v1/acl/token in the fake",
		15: "Authorize is per token: the read-only token's read is refused",
		20: "Authorize is per token: the read-only token's read is refused",
	}
	steps := Transcript(t, "E")
	synctest.Test(t, func(t *testing.T) {
		s := NewWithListener(nopListener{}, Options{Authorize: func(tok string) bool { return tok == management }})
		defer s.Close()
		c := newConformer()
		for i, st := range steps {
			step := fmt.Sprintf("E/%d (%s)", i, st.Note)
			if strings.HasPrefix(st.Request.Path, "/v1/event/stream") {
				continue // TestConformsToNomadRefusedStreams
			}
			req := c.request(st.Request.Method, st.Request.Path, st.Request.Body)
			for k, v := range st.Request.Headers {
				req.Header.Set(k, v)
			}
			rr := httptest.NewRecorder()
			s.srv.Handler.ServeHTTP(rr, req)
			if why, ok := skip[i]; ok {
				t.Logf("%s: not compared: %s", step, why)
				continue
			}
			rec := st
			if i == 11 { // exception: a fresh table's index, 1 in Nomad, 0 in the fake
				if rr.Header().Get("X-Nomad-Index") == "" {
					t.Errorf("%s: no X-Nomad-Index, Nomad sends one", step)
				}
				rec.Response.Headers = without(rec.Response.Headers, "X-Nomad-Index")
				rr.Header().Del("X-Nomad-Index")
			}
			// A recorded body the conformer reads as a variable: only
			// text and variables here.
			if !bytes.HasPrefix(bytes.TrimSpace(st.Response.Body), []byte(`"`)) && !bytes.HasPrefix(bytes.TrimSpace(st.Response.Body), []byte(`{`)) {
				t.Fatalf("%s: a body the comparison cannot read", step)
			}
			for _, d := range c.compare(rec, rr) {
				t.Errorf("%s: %s", step, d)
			}
		}
	})
}
