package nomadtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// Job parsing and guarded registration's conformance: transcript F
// (testdata/nomad-2.0.5/transcripts/F.json) replayed step by step against
// the fake's handler (F has no timings: its steps ran one after another).
//
// The parses are answered from what the test registers first: each
// recorded answer with Canonicalize true through AddParse, each recorded
// 400 through AddParseError. A parse without Canonicalize is then the
// fake's own derivation from the canonical answer, compared with Nomad's.
// F has no canonical answer for F/4's text and Variables (an undeclared
// variable): F/0's is registered for it, the parse of the same text with no
// Variables, since Nomad ignores the variable (F/4's answer is F/2's with
// the default tag).
//
// The registrations follow from the fake's own state. Their indexes are
// mapped one to one and in order (conform_test.go's ordered): the fake
// starts at index 100, and takes no index between the two registrations
// where Nomad's scheduler wrote three. A JobModifyIndex sent is the fake's
// counterpart of the index Nomad answered; F/9's stale index (the current
// one less one) is the fake's current one less one; the numbers in a
// refusal's text are mapped the same way.
//
// Compared: the status, Content-Type, whether X-Nomad-Index is sent (its
// value by the mapping), X-Nomad-Knownleader and X-Nomad-Lastcontact, and
// the whole body: a text byte for byte; a parse's job key by key and value
// by value; a registration's answer key by key, its indexes by the mapping
// and its EvalID as a fresh UUID. The job read after the registration
// differs from Nomad's exactly where jobs.go says the fake does not
// re-canonicalize (readExceptions).
//
// Not replayed: F/11 (POST /v1/job/:id/plan) and F/12 (DELETE
// /v1/job/:id?purge=true): the fake has no such endpoints.

// readExceptions are where the fake's job read differs from F/7's, by path
// ("[]" for any element of a list): Nomad's canonical encoding of the job,
// which the fake does not redo (jobs.go).
var readExceptions = []string{
	".DispatchIdempotencyToken",
	".Migrate",
	".NodePool",
	".Reschedule",
	".Status",
	".SubmitTime",
	".TaskGroups[].PreventRescheduleOnLost",
	".TaskGroups[].Tasks[].CSIPluginConfig",
	".TaskGroups[].Tasks[].Identity",
	".TaskGroups[].Tasks[].LogConfig.Enabled",
	".TaskGroups[].Tasks[].Resources.DiskMB",
	".TaskGroups[].Tasks[].Resources.IOPS",
	".TaskGroups[].Tasks[].Resources.MemoryMaxMB",
	".TaskGroups[].Tasks[].Resources.SecretsMB",
	".Update.HealthCheck",
	".Update.HealthyDeadline",
	".Update.MinHealthyTime",
	".Update.ProgressDeadline",
}

// fReplay holds what one replay of F knows.
type fReplay struct {
	index   ordered
	evalIDs map[string]bool // the fake's, so far
}

// reqIndex is the fake's counterpart of an index Nomad was sent: 0 as it
// is, one Nomad answered by the mapping, one below an answered one (a
// stale index) as far below the fake's.
func (f *fReplay) reqIndex(t *testing.T, rec uint64) uint64 {
	if rec == 0 {
		return 0
	}
	if g, ok := f.index.m[rec]; ok {
		return g
	}
	var above []uint64
	for r := range f.index.m {
		if r > rec {
			above = append(above, r)
		}
	}
	if len(above) == 0 {
		t.Fatalf("index %d: no index Nomad answered above it to map it by", rec)
	}
	r := slices.Min(above)
	return f.index.m[r] - (r - rec)
}

var numberRE = regexp.MustCompile(`\d+`)

// request turns a recorded request into the fake's: a registration's
// JobModifyIndex becomes the fake's counterpart.
func (f *fReplay) request(t *testing.T, st TranscriptStep) *http.Request {
	body := []byte(st.Request.Body)
	if st.Request.Path == "/v1/jobs" {
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		if n, ok := m["JobModifyIndex"].(json.Number); ok {
			v, _ := strconv.ParseUint(n.String(), 10, 64)
			m["JobModifyIndex"] = f.reqIndex(t, v)
		}
		var err error
		if body, err = json.Marshal(m); err != nil {
			t.Fatal(err)
		}
	}
	if string(body) == "null" {
		body = nil
	}
	return httptest.NewRequest(st.Request.Method, st.Request.Path, bytes.NewReader(body))
}

// compare compares the fake's answer with Nomad's.
func (f *fReplay) compare(t *testing.T, st TranscriptStep, rr *httptest.ResponseRecorder) []string {
	want := st.Response
	diffs := statusAndHeaders(rr, st)
	recIdx, hasRec := want.Headers["X-Nomad-Index"]
	gotIdx, hasGot := rr.Header().Get("X-Nomad-Index"), rr.Header().Get("X-Nomad-Index") != ""
	if hasRec != hasGot {
		diffs = append(diffs, fmt.Sprintf("X-Nomad-Index %q, Nomad %q", gotIdx, recIdx))
	} else if hasRec {
		diffs = f.match(diffs, "X-Nomad-Index", recIdx, gotIdx)
	}

	var text string
	if json.Unmarshal(want.Body, &text) == nil {
		if st.Request.Path == "/v1/jobs" {
			text = numberRE.ReplaceAllStringFunc(text, func(n string) string {
				v, _ := strconv.ParseUint(n, 10, 64)
				return strconv.FormatUint(f.reqIndex(t, v), 10)
			})
		}
		if got := rr.Body.String(); got != text {
			diffs = append(diffs, fmt.Sprintf("body %q, Nomad %q", got, text))
		}
		return diffs
	}
	rec, got := decodeNumbers(t, want.Body), decodeNumbers(t, rr.Body.Bytes())
	if got == nil {
		return append(diffs, fmt.Sprintf("body %.200q is not a JSON object", rr.Body.String()))
	}
	switch {
	case st.Request.Path == "/v1/jobs":
		return append(diffs, f.compareRegistration(rec, got, recIdx, gotIdx)...)
	case strings.HasPrefix(st.Request.Path, "/v1/job/"):
		for _, k := range []string{"CreateIndex", "ModifyIndex", "JobModifyIndex"} {
			diffs = f.match(diffs, k, fmt.Sprint(rec[k]), fmt.Sprint(got[k]))
			delete(rec, k)
			delete(got, k)
		}
		paths := jsonDiff(rec, got, "")
		if !slices.Equal(paths, readExceptions) {
			diffs = append(diffs, fmt.Sprintf("differs from Nomad's job at %v, where jobs.go lists %v", paths, readExceptions))
		}
		return diffs
	default: // a parse
		if paths := jsonDiff(rec, got, ""); len(paths) > 0 {
			diffs = append(diffs, fmt.Sprintf("job differs from Nomad's at %v", paths))
		}
		return diffs
	}
}

// compareRegistration compares a registration's 200 answers.
func (f *fReplay) compareRegistration(rec, got map[string]any, recIdx, gotIdx string) []string {
	var diffs []string
	keys := func(m map[string]any) []string {
		var out []string
		for k := range m {
			out = append(out, k)
		}
		sort.Strings(out)
		return out
	}
	if rk, gk := keys(rec), keys(got); !slices.Equal(rk, gk) {
		return append(diffs, fmt.Sprintf("keys %v, Nomad %v", gk, rk))
	}
	for _, k := range keys(rec) {
		switch k {
		case "EvalCreateIndex", "Index", "JobModifyIndex":
			// Each is the registration's index, in Nomad as in the fake.
			if fmt.Sprint(rec[k]) != recIdx {
				diffs = append(diffs, fmt.Sprintf("recording: %s %v is not X-Nomad-Index %s", k, rec[k], recIdx))
			}
			if fmt.Sprint(got[k]) != gotIdx {
				diffs = append(diffs, fmt.Sprintf("%s %v is not X-Nomad-Index %s", k, got[k], gotIdx))
			}
		case "EvalID":
			id := fmt.Sprint(got[k])
			if !uuidRE.MatchString(id) || len(id) != 36 || f.evalIDs[id] {
				diffs = append(diffs, fmt.Sprintf("EvalID %q: not a fresh UUID", id))
			}
			f.evalIDs[id] = true
		default:
			if fmt.Sprint(rec[k]) != fmt.Sprint(got[k]) {
				diffs = append(diffs, fmt.Sprintf("%s %v, Nomad %v", k, got[k], rec[k]))
			}
		}
	}
	return diffs
}

// match maps an index Nomad answered to the fake's.
func (f *fReplay) match(diffs []string, what, rec, got string) []string {
	r, err1 := strconv.ParseUint(rec, 10, 64)
	g, err2 := strconv.ParseUint(got, 10, 64)
	if err1 != nil || err2 != nil {
		return append(diffs, fmt.Sprintf("%s %q, Nomad %q: not indexes", what, got, rec))
	}
	if err := f.index.match(r, g); err != nil {
		return append(diffs, what+": "+err.Error())
	}
	return diffs
}

func decodeNumbers(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil
	}
	return m
}

// jsonDiff lists the paths where two decoded JSON values differ, a key on
// one side only included, with "[]" for a list's elements, sorted and each
// once.
func jsonDiff(rec, got any, path string) []string {
	seen := map[string]bool{}
	var walk func(r, g any, p string)
	walk = func(r, g any, p string) {
		switch rv := r.(type) {
		case map[string]any:
			gv, ok := g.(map[string]any)
			if !ok {
				seen[p] = true
				return
			}
			for k, x := range rv {
				if y, ok := gv[k]; ok {
					walk(x, y, p+"."+k)
				} else {
					seen[p+"."+k] = true
				}
			}
			for k := range gv {
				if _, ok := rv[k]; !ok {
					seen[p+"."+k] = true
				}
			}
		case []any:
			gv, ok := g.([]any)
			if !ok || len(gv) != len(rv) {
				seen[p] = true
				return
			}
			for i := range rv {
				walk(rv[i], gv[i], p+"[]")
			}
		default:
			if !reflect.DeepEqual(r, g) {
				seen[p] = true
			}
		}
	}
	walk(rec, got, path)
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func TestConformsToNomadJobParseAndRegister(t *testing.T) {
	steps := Transcript(t, "F")
	s := NewWithListener(nopListener{}, Options{})
	defer s.Close()
	s.Reset(100) // the fake's indexes are not the recording's

	type parseRequest struct {
		JobHCL, Variables string
		Canonicalize      bool
	}
	parseOf := func(st TranscriptStep) parseRequest {
		var p parseRequest
		if err := json.Unmarshal(st.Request.Body, &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// The recorded answers, registered first.
	canonical := map[[2]string]bool{}
	for _, st := range steps {
		if st.Request.Path != "/v1/jobs/parse" {
			continue
		}
		p := parseOf(st)
		var text string
		switch {
		case json.Unmarshal(st.Response.Body, &text) == nil:
			s.AddParseError(p.JobHCL, p.Variables, text)
		case p.Canonicalize:
			var job map[string]any
			if err := json.Unmarshal(st.Response.Body, &job); err != nil {
				t.Fatal(err)
			}
			s.AddParse(p.JobHCL, p.Variables, job)
			canonical[[2]string{p.JobHCL, p.Variables}] = true
		}
	}
	// F/4: the undeclared variable is ignored; its canonical answer is
	// F/0's (the same text, no Variables).
	if p0, p4 := parseOf(steps[0]), parseOf(steps[4]); p0.JobHCL != p4.JobHCL || p0.Variables != "" || !p0.Canonicalize || p4.Variables != "nope = \"1\"\n" || canonical[[2]string{p4.JobHCL, p4.Variables}] {
		t.Fatalf("F/0 and F/4 are no longer the parses this test knows")
	} else {
		var job map[string]any
		if err := json.Unmarshal(steps[0].Response.Body, &job); err != nil {
			t.Fatal(err)
		}
		s.AddParse(p4.JobHCL, p4.Variables, job)
	}

	f := &fReplay{index: ordered{what: "index", m: map[uint64]uint64{}}, evalIDs: map[string]bool{}}
	for i, st := range steps {
		step := fmt.Sprintf("F/%d (%s)", i, st.Note)
		if strings.HasSuffix(st.Request.Path, "/plan") || st.Request.Method == http.MethodDelete {
			t.Logf("%s: not replayed: the fake has no %s %s", step, st.Request.Method, st.Request.Path)
			continue
		}
		rr := httptest.NewRecorder()
		s.srv.Handler.ServeHTTP(rr, f.request(t, st))
		for _, d := range f.compare(t, st, rr) {
			t.Errorf("%s: %s", step, d)
		}
	}
	if len(f.evalIDs) != 2 {
		t.Errorf("%d registrations answered, F has 2", len(f.evalIDs))
	}
}
