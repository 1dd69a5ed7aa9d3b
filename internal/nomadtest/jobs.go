package nomadtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Parsing and registering a job (POST|PUT /v1/jobs/parse, POST|PUT
// /v1/jobs), as a real Nomad 2.0.5 answered them in transcript F
// (testdata/nomad-2.0.5/transcripts/F.json; conform_jobs_test.go replays it
// against this fake). "Nomad's source, not recorded" marks what F does not
// show, kept because a caller can send it; "the fake's own" marks what only
// the fake does.
//
// Parse. The fake parses no HCL: it answers what a test registered for the
// request's JobHCL and Variables texts, compared byte for byte (HCLv1 is
// ignored, as Nomad 2.0.5 does: F's HCLv1 request was answered by the HCL2
// parser). AddParse registers the job Nomad answered with Canonicalize true,
// AddParseError a 400 text (F: `Failed to parse job: input.hcl:2,13-14:
// Unclosed configuration block; ...`).
//   - 200 application/json with the job; no X-Nomad-Index on any parse
//     answer, 200 or 400 (F).
//   - Canonicalize false: the registered job with the fields Canonicalize
//     filled in set back to null, as F shows them (parseDefaults). Only
//     those F shows, and only where they hold the value Canonicalize gave
//     F's service job: a field F's job leaves out (a service's checks, a
//     network, a template) stays as the registered job has it, a batch
//     job's restart and reschedule defaults stay, and a field the HCL set
//     to its default is null, where Nomad would show it. An assumption.
//   - A parse not registered: 400 text/plain `Failed to parse job: ` and
//     that the fake holds no answer for it (the fake's own).
//   - A body that is not JSON: 400 with the decoder's error; an empty
//     JobHCL: 400 `Job spec is empty` (Nomad's source, not recorded).
//
// Register. The job of a JobRegisterRequest is stored through RegisterJob
// (a new version, JobRegistered published at its index), in the namespace
// Nomad's source picks: ?namespace=, else the request's Namespace, else the
// job's, else default (not recorded; F used default). Whether that
// namespace exists is not checked (an assumption: no recording refuses one).
//   - 200 {"EvalCreateIndex","EvalID","Index","JobModifyIndex",
//     "KnownLeader":false,"LastContact":0,"NextToken":"","Warnings":""},
//     every index the registration's, EvalID a random UUID, and
//     X-Nomad-Index the same index (F, B5, C). Warnings is always "" (D's
//     registration had one, about services without shutdown_delay: the fake
//     gives none). A periodic or parameterized job has no evaluation:
//     EvalID "" and EvalCreateIndex 0 (Nomad's source, not recorded).
//   - EnforceIndex with JobModifyIndex 0 while the job exists: 500 text
//     `Enforcing job modify index 0: job already exists`; with an index not
//     the job's JobModifyIndex: 500 `Enforcing job modify index N: job
//     exists with conflicting job modify index: M` (F). With N > 0 for a job
//     that does not exist: 500 `Enforcing job modify index N: job does not
//     exist` (Nomad's source, not recorded).
//   - A refused registration sends no X-Nomad-Index (F), publishes nothing
//     and takes no index: Nomad checks EnforceIndex before its raft write
//     (Nomad's source; F agrees: 11 for the registration, two refusals, 15
//     for the next, with the scheduler's writes for the first evaluation in
//     between). The check and the write are one step in the fake.
//   - No Job: 400 `Job must be specified`; no ID: 400 `Job ID hasn't been
//     provided` (Nomad's source, not recorded).
//   - Every registration is a new version, even of an unchanged job (Nomad
//     keeps the version of an unchanged job and only makes an evaluation:
//     its source, not recorded). Assumption: nothing here tells them apart.
//
// The job then read (GET /v1/job/:id) is the one sent, with the fake's
// CreateIndex, ModifyIndex, JobModifyIndex, Version and Stop: the fake does
// not re-canonicalize it as Nomad does. F's read after a registration shows
// what Nomad's own encoding adds or changes, and the fake does not:
// NodePool "default" (for ""), Status "pending" (for ""), SubmitTime the
// registration's time (for null), DispatchIdempotencyToken "" (for null),
// the job's Update holding only MaxParallel and Stagger (the other fields
// 0 or ""), no job-level Migrate and Reschedule keys, a group's
// PreventRescheduleOnLost false (for null), a task's default Identity
// (`"Name":"default"`, audience nomadproject.io), a CSIPluginConfig key,
// no LogConfig.Enabled key, and Resources' DiskMB, IOPS, MemoryMaxMB and
// SecretsMB 0 (for null). conform_jobs_test.go holds this list to the
// recording.

// parseKey is what a parse is registered by: the JobHCL and Variables texts.
type parseKey struct{ hcl, variables string }

// parsed is a registered parse: a job, or the text of a 400.
type parsed struct {
	job  map[string]any
	text string
}

// AddParse registers job, the canonical job Nomad answered to a parse of hcl
// with variables (its /v1/jobs/parse answer with Canonicalize true,
// decoded), as the answer to a parse of those two texts.
func (s *Server) AddParse(hcl, variables string, job map[string]any) {
	s.addParse(parseKey{hcl, variables}, parsed{job: Clone(job)})
}

// AddParseError registers text as the 400 Nomad answers to a parse of hcl
// with variables, such as `Failed to parse job: input.hcl:2,13-14: Unclosed
// configuration block; ...`.
func (s *Server) AddParseError(hcl, variables, text string) {
	s.addParse(parseKey{hcl, variables}, parsed{text: text})
}

func (s *Server) addParse(k parseKey, p parsed) {
	a := s.api()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.parses == nil {
		a.parses = map[parseKey]parsed{}
	}
	a.parses[k] = p
}

// decodeBody decodes a request body as Nomad's decodeBody does (its
// source): an empty body is an error, else the JSON decoder's.
func decodeBody(r *http.Request, v any) error {
	err := json.NewDecoder(r.Body).Decode(v)
	if err == io.EOF {
		return errors.New("Request body is empty") // Nomad's own text

	}
	return err
}

func (s *Server) jobParse(w http.ResponseWriter, r *http.Request) {
	w.Header().Del("X-Nomad-Index") // F: none on a parse's answers
	var req struct {
		JobHCL       string
		Variables    string
		Canonicalize bool
		HCLv1        bool // ignored, as Nomad 2.0.5 does (F)
	}
	if err := decodeBody(r, &req); err != nil {
		answerText(w, http.StatusBadRequest, "", err.Error())
		return
	}
	if req.JobHCL == "" {
		answerText(w, http.StatusBadRequest, "", "Job spec is empty")
		return
	}
	a := s.api()
	a.mu.Lock()
	p, ok := a.parses[parseKey{req.JobHCL, req.Variables}]
	a.mu.Unlock()
	switch {
	case !ok:
		answerText(w, http.StatusBadRequest, "", "Failed to parse job: nomadtest: the fake holds no parse of this JobHCL with these Variables (Server.AddParse)")
	case p.job == nil:
		answerText(w, http.StatusBadRequest, "", p.text)
	case req.Canonicalize:
		writeJSON(w, http.StatusOK, 0, p.job)
	default:
		writeJSON(w, http.StatusOK, 0, uncanonical(p.job))
	}
}

// parseDefaults are the values Canonicalize filled in for F's job where its
// answer without Canonicalize has null (F's two parses of the same text and
// Variables), by the object that holds them.
var parseDefaults = func() (d struct{ Job, Group, Task, Resources map[string]any }) {
	const update = `{"AutoPromote":false,"AutoRevert":false,"Canary":0,"HealthCheck":"checks","HealthyDeadline":300000000000,"MaxParallel":1,"MinHealthyTime":10000000000,"ProgressDeadline":600000000000,"Stagger":30000000000}`
	const restart = `{"Attempts":2,"Delay":15000000000,"Interval":1800000000000,"Mode":"fail","RenderTemplates":false}`
	for _, o := range []struct {
		m    *map[string]any
		text string
	}{
		{&d.Job, `{"AllAtOnce":false,"ConsulNamespace":"","CreateIndex":0,"JobModifyIndex":0,"ModifyIndex":0,"Namespace":"default","NodePool":"","NomadTokenID":"","ParentID":"","Priority":50,"Region":"global","Stable":false,"Status":"","StatusDescription":"","Stop":false,"Type":"service","Update":` + update + `,"VaultNamespace":"","Version":0}`},
		{&d.Group, `{"Count":1,"EphemeralDisk":{"Migrate":false,"SizeMB":300,"Sticky":false},"Migrate":{"HealthCheck":"checks","HealthyDeadline":300000000000,"MaxParallel":1,"MinHealthyTime":10000000000},"ReschedulePolicy":{"Attempts":0,"Delay":30000000000,"DelayFunction":"exponential","Interval":0,"MaxDelay":3600000000000,"Unlimited":true},"RestartPolicy":` + restart + `,"Update":` + update + `}`},
		{&d.Task, `{"KillTimeout":5000000000,"LogConfig":{"Disabled":false,"Enabled":null,"MaxFileSizeMB":10,"MaxFiles":10},"RestartPolicy":` + restart + `}`},
		{&d.Resources, `{"Cores":0}`},
	} {
		if err := json.Unmarshal([]byte(o.text), o.m); err != nil {
			panic(err)
		}
	}
	return d
}()

// uncanonical is a parse's answer without Canonicalize, from the canonical
// one: parseDefaults set back to null.
func uncanonical(job map[string]any) map[string]any {
	job = Clone(job)
	nullDefaults(job, parseDefaults.Job)
	for _, g := range objects(job["TaskGroups"]) {
		nullDefaults(g, parseDefaults.Group)
		for _, t := range objects(g["Tasks"]) {
			nullDefaults(t, parseDefaults.Task)
			if res, ok := t["Resources"].(map[string]any); ok {
				nullDefaults(res, parseDefaults.Resources)
			}
		}
	}
	return job
}

// nullDefaults sets to null each key of m that holds its value in defaults.
func nullDefaults(m, defaults map[string]any) {
	for k, d := range defaults {
		if v, ok := m[k]; ok && v != nil && sameJSON(v, d) {
			m[k] = nil
		}
	}
}

func sameJSON(a, b any) bool {
	ja, err := json.Marshal(a)
	if err != nil {
		return false
	}
	jb, err := json.Marshal(b)
	return err == nil && string(ja) == string(jb)
}

// objects is a decoded JSON list's objects.
func objects(v any) []map[string]any {
	l, _ := v.([]any)
	out := make([]map[string]any, 0, len(l))
	for _, e := range l {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// enforcePrefix begins every refusal of a registration made with
// EnforceIndex, as in Nomad.
const enforcePrefix = "Enforcing job modify index"

func (s *Server) jobRegister(w http.ResponseWriter, r *http.Request) {
	w.Header().Del("X-Nomad-Index") // set below on a 200 only (F)
	var req struct {
		Job            map[string]any
		EnforceIndex   bool
		JobModifyIndex uint64
		Namespace      string // the embedded WriteRequest's
		Submission     map[string]any
	}
	if err := decodeBody(r, &req); err != nil {
		answerText(w, http.StatusBadRequest, "", err.Error())
		return
	}
	if req.Job == nil {
		answerText(w, http.StatusBadRequest, "", "Job must be specified")
		return
	}
	id, _ := req.Job["ID"].(string)
	if id == "" {
		answerText(w, http.StatusBadRequest, "", "Job ID hasn't been provided")
		return
	}
	ns := r.URL.Query().Get("namespace")
	if ns == "" {
		ns = req.Namespace
	}
	if ns == "" {
		ns, _ = req.Job["Namespace"].(string)
	}
	if ns == "" {
		ns = "default"
	}
	req.Job["Namespace"] = ns

	a := s.api()
	a.mu.Lock()
	defer a.mu.Unlock()
	if req.EnforceIndex {
		n := req.JobModifyIndex
		var refusal string
		switch prev, exists := a.jobs[ns+"/"+id]; {
		case exists && n == 0:
			refusal = fmt.Sprintf("%s 0: job already exists", enforcePrefix)
		case exists && n != uint64(toFloat(prev["JobModifyIndex"])):
			refusal = fmt.Sprintf("%s %d: job exists with conflicting job modify index: %d", enforcePrefix, n, uint64(toFloat(prev["JobModifyIndex"])))
		case !exists && n != 0:
			refusal = fmt.Sprintf("%s %d: job does not exist", enforcePrefix, n)
		}
		if refusal != "" {
			answerText(w, http.StatusInternalServerError, "", refusal)
			return
		}
	}
	index := s.registerLocked(req.Job)
	if a.submissions == nil {
		a.submissions = map[string]map[string]any{}
	}
	a.submissions[ns+"/"+id] = req.Submission // nil: none sent (Nomad then keeps none, 404 on /v1/job/:id/submission)
	evalID, evalIndex := newUUID(), index
	if req.Job["Periodic"] != nil || req.Job["ParameterizedJob"] != nil {
		evalID, evalIndex = "", 0
	}
	writeJSON(w, http.StatusOK, index, map[string]any{
		"EvalCreateIndex": evalIndex,
		"EvalID":          evalID,
		"Index":           index,
		"JobModifyIndex":  index,
		"KnownLeader":     false,
		"LastContact":     0,
		"NextToken":       "",
		"Warnings":        "",
	})
}

// JobSubmission returns the submission (the job's source and variables, as
// `nomad job run` sends them) of the last registration of namespace/id,
// nil when it sent none.
func (s *Server) JobSubmission(namespace, id string) map[string]any {
	a := s.api()
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.submissions[namespace+"/"+id]
}
