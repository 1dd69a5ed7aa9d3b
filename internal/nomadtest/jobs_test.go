package nomadtest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/api"
)

// fParse returns F's parse of step i: its JobHCL and Variables, and the
// job Nomad answered.
func fParse(t *testing.T, steps []TranscriptStep, i int) (hcl, variables string, job map[string]any) {
	t.Helper()
	var req struct{ JobHCL, Variables string }
	if err := json.Unmarshal(steps[i].Request.Body, &req); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(steps[i].Response.Body, &job); err != nil {
		t.Fatalf("F/%d: %v", i, err)
	}
	return req.JobHCL, req.Variables, job
}

// The official client parses and registers against the fake: the parse
// registered with F/1's answer (Variables `tag = "v2"`), then RegisterOpts
// with EnforceIndex as the stage command calls it.
func TestOfficialClientParsesAndRegisters(t *testing.T) {
	t.Parallel()
	steps := Transcript(t, "F")
	s := StartT(t, Options{})
	hcl, vars, canonical := fParse(t, steps, 1)
	s.AddParse(hcl, vars, canonical)
	c, err := api.NewClient(&api.Config{Address: s.URL})
	if err != nil {
		t.Fatal(err)
	}

	job, err := c.Jobs().ParseHCLOpts(&api.JobsParseRequest{JobHCL: hcl, Variables: vars, Canonicalize: true})
	if err != nil {
		t.Fatal(err)
	}
	if *job.ID != "rec-f" || *job.Type != "service" || job.TaskGroups[0].Tasks[0].Config["image"] != "registry.service.consul:5000/app:v2" {
		t.Fatalf("parsed: ID %q, Type %q, image %v", *job.ID, *job.Type, job.TaskGroups[0].Tasks[0].Config["image"])
	}
	raw, err := c.Jobs().ParseHCLOpts(&api.JobsParseRequest{JobHCL: hcl, Variables: vars})
	if err != nil {
		t.Fatal(err)
	}
	if raw.Type != nil || raw.Priority != nil || *raw.Name != "rec-f" {
		t.Errorf("parsed without Canonicalize: Type %v, Priority %v, Name %v; want nil, nil, rec-f", raw.Type, raw.Priority, raw.Name)
	}
	if _, err := c.Jobs().ParseHCLOpts(&api.JobsParseRequest{JobHCL: hcl + "\n", Canonicalize: true}); err == nil || !strings.Contains(err.Error(), "Failed to parse job: ") {
		t.Errorf("a parse not registered: %v", err)
	}

	first, wm, err := c.Jobs().RegisterOpts(job, &api.RegisterOptions{EnforceIndex: true, ModifyIndex: 0}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if first.JobModifyIndex == 0 || first.EvalCreateIndex != first.JobModifyIndex || wm.LastIndex != first.JobModifyIndex || first.EvalID == "" {
		t.Errorf("the first registration: %+v, X-Nomad-Index %d", first, wm.LastIndex)
	}
	if _, _, err := c.Jobs().RegisterOpts(job, &api.RegisterOptions{EnforceIndex: true, ModifyIndex: 0}, nil); err == nil || !strings.Contains(err.Error(), "job already exists") {
		t.Errorf("registering a job that exists with index 0: %v, want `job already exists`", err)
	}
	if _, _, err := c.Jobs().RegisterOpts(job, &api.RegisterOptions{EnforceIndex: true, ModifyIndex: first.JobModifyIndex + 1}, nil); err == nil || !strings.Contains(err.Error(), "job exists with conflicting job modify index") {
		t.Errorf("registering with another index: %v", err)
	}
	second, _, err := c.Jobs().RegisterOpts(job, &api.RegisterOptions{EnforceIndex: true, ModifyIndex: first.JobModifyIndex}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The refusals took no index (Nomad checks before its raft write).
	if second.JobModifyIndex != first.JobModifyIndex+1 || second.EvalID == first.EvalID {
		t.Errorf("the second registration %+v after the first %+v", second, first)
	}
	got, _, err := c.Jobs().Info("rec-f", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *got.Version != 1 || *got.JobModifyIndex != second.JobModifyIndex || *got.CreateIndex != first.JobModifyIndex {
		t.Errorf("the job read: Version %d, JobModifyIndex %d, CreateIndex %d", *got.Version, *got.JobModifyIndex, *got.CreateIndex)
	}
}

// A registration over HTTP publishes JobRegistered at its index; a refused
// one publishes nothing. EnforceIndex N > 0 for a job that does not exist
// is refused with Nomad's text (its source).
func TestRegisterOverHTTP(t *testing.T) {
	t.Parallel()
	s := StartT(t, Options{})
	s.AddNamespace("other")
	put := func(path, body string) *httptest.ResponseRecorder {
		rr := httptest.NewRecorder()
		s.srv.Handler.ServeHTTP(rr, httptest.NewRequest(http.MethodPut, path, strings.NewReader(body)))
		return rr
	}
	rr := put("/v1/jobs", `{"Job":{"ID":"x","Name":"x"},"EnforceIndex":true,"JobModifyIndex":5}`)
	if rr.Code != 500 || rr.Body.String() != "Enforcing job modify index 5: job does not exist" || rr.Header().Get("X-Nomad-Index") != "" {
		t.Errorf("N > 0 for a missing job: %d %q, X-Nomad-Index %q", rr.Code, rr.Body.String(), rr.Header().Get("X-Nomad-Index"))
	}
	s.mu.Lock()
	frames := len(s.frames)
	s.mu.Unlock()
	if frames != 0 {
		t.Errorf("a refused registration published %d frames", frames)
	}

	rr = put("/v1/jobs?namespace=other", `{"Job":{"ID":"x","Name":"x","Namespace":"default"}}`)
	if rr.Code != 200 {
		t.Fatalf("register: %d %s", rr.Code, rr.Body.String())
	}
	var resp struct{ Index uint64 }
	if err := json.Unmarshal(rr.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	f := s.frames[len(s.frames)-1]
	s.mu.Unlock()
	if e := f.events[0]; f.index != resp.Index || e.Type != "JobRegistered" || e.Key != "x" || e.Namespace != "other" {
		t.Errorf("frame %d %+v after the registration at %d in namespace other (?namespace= wins)", f.index, e, resp.Index)
	}

	for _, c := range []struct{ body, want string }{
		{``, "Request body is empty"},
		{`{}`, "Job must be specified"},
		{`{"Job":{"Name":"x"}}`, "Job ID hasn't been provided"},
	} {
		if rr := put("/v1/jobs", c.body); rr.Code != 400 || rr.Body.String() != c.want {
			t.Errorf("register %q: %d %q, want 400 %q", c.body, rr.Code, rr.Body.String(), c.want)
		}
	}
}

// Both endpoints go through the guard: 403 `Permission denied` for a token
// Authorize refuses, as E recorded for Nomad's other endpoints.
func TestParseAndRegisterRefusedToken(t *testing.T) {
	t.Parallel()
	s := StartT(t, Options{Authorize: func(tok string) bool { return tok == "good" }})
	s.AddParse("job {}", "", map[string]any{"ID": "x"})
	for _, c := range []struct{ path, body string }{
		{"/v1/jobs/parse", `{"JobHCL":"job {}","Canonicalize":true}`},
		{"/v1/jobs", `{"Job":{"ID":"x"}}`},
	} {
		for _, tok := range []string{"", "bad", "good"} {
			req := httptest.NewRequest(http.MethodPost, c.path, strings.NewReader(c.body))
			req.Header.Set("X-Nomad-Token", tok)
			rr := httptest.NewRecorder()
			s.srv.Handler.ServeHTTP(rr, req)
			want := http.StatusForbidden
			if tok == "good" {
				want = http.StatusOK
			}
			if rr.Code != want || (want == 403 && (rr.Body.String() != "Permission denied" || rr.Header().Get("X-Nomad-Index") != "")) {
				t.Errorf("%s with token %q: %d %q, X-Nomad-Index %q; want %d", c.path, tok, rr.Code, rr.Body.String(), rr.Header().Get("X-Nomad-Index"), want)
			}
		}
	}
}
