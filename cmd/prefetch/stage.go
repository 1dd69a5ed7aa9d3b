package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-prefetch/nomad-prefetch/cluster"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
	"github.com/nomad-prefetch/nomad-prefetch/stage"
)

var stageDoc = `Usage: prefetch stage [-var K=V]... [-var-file FILE]... [-timeout 15m] [-run] [-ttl 24h]
                     [-provider nomad|consul] [-service prefetch] [-token-file FILE] JOBFILE
       prefetch stage -cancel [-namespace NS] JOB

Stages a job's new images on every node that can run it, before the job is
registered: for updating the jobs on the image path itself (the in-cluster
registry, its proxy, its storage), which Nomad would otherwise stop before it
pulls their new image from the registry they are.

1. Reads JOBFILE as 'nomad job run' would: Nomad parses it (/v1/jobs/parse),
   with the variables of NOMAD_VAR_name, each -var-file, then each -var.
2. Writes the images of its docker tasks, with each group's placement
   (datacenters, node pool, constraints, host volumes), into the staged set: the Nomad
   variable ` + stage.Path + ` in namespace ` + stage.Namespace + `, which every agent with
   discovery on follows. An agent whose node can run a group fetches that
   group's images as it fetches a registered job's (rewrites to sources,
   include/exclude, allowed_prefixes); /v1/status and 'prefetch status' show
   them as staged.
3. Waits until every agent whose node can run a group of the job has read
   this version of the staged set and holds all of that group's images. A
   node where no group can run is not waited for; an agent that has not read
   it yet, or can't be asked, is not ready; when no node with an agent can
   run a group, it says so at once. Progress goes to stderr.
4. With -run, then registers the job as 'nomad job run -detach' does, and
   prints the evaluation ID; it refuses if the job was changed by someone
   else since the stage began (Nomad's EnforceIndex with the job's modify
   index read at the start; a new job must still not exist).

A staged job goes away once a version of the job is registered (discovery
keeps its images from then on; each write of the set by prefetch stage,
-cancel too, drops the jobs registered or deregistered since they were
staged, reading each), with -cancel, or when its -ttl passes. At
most ` + strconv.Itoa(stage.MaxJobs) + ` jobs are staged at once, ` + strconv.Itoa(stage.MaxImagesPerJob) + ` docker tasks each, ` + strconv.Itoa(stage.MaxSetBytes>>10) + ` KiB in all.

The Nomad settings come from the standard environment (NOMAD_ADDR,
NOMAD_TOKEN, NOMAD_CACERT, NOMAD_NAMESPACE, ...). The token needs parse-job
(and read-job) on the job's namespace, variables write on ` + stage.Path + `,
and for -run submit-job: nomad/jobs/prefetch-stage-policy.hcl. The agents are
found and asked as by 'prefetch wait' (-provider, -service, -job,
-token-file); with -provider nomad their service is read in
-agents-namespace (default), NOMAD_NAMESPACE being the staged job's.

Exit codes: 0 ready (and, with -run, registered); 1 not ready in time (each
node still missing an image, and why), the registration refused, or Nomad
unreachable; 2 usage errors, a job file Nomad can't parse (its own message).
`

// stageTimeout bounds one Nomad call of stage.
const stageTimeout = 30 * time.Second

// maxJobFile bounds what is read of JOBFILE and of each -var-file.
const maxJobFile = 4 << 20

func runStage(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("stage", stageDoc, stdout, stderr)
	var vars, varFiles []string
	fs.Func("var", "a job variable, name=value (repeatable; a string: put a list or a map in a -var-file)", func(s string) error {
		vars = append(vars, s)
		return nil
	})
	fs.Func("var-file", "an HCL file of job variables (repeatable; a later one wins)", func(s string) error {
		varFiles = append(varFiles, s)
		return nil
	})
	timeout := fs.Duration("timeout", 15*time.Minute, "give up waiting after this long")
	interval := fs.Duration("interval", 2*time.Second, "pause between two looks at the agents")
	runIt := fs.Bool("run", false, "register the job once every eligible agent has its images")
	ttl := fs.Duration("ttl", stage.DefaultTTL, "how long the staged job lasts if it is never registered")
	cancelIt := fs.Bool("cancel", false, "remove job JOB from the staged set instead")
	namespace := fs.String("namespace", "", "the namespace of a job file that names none, and with -cancel JOB's (default NOMAD_NAMESPACE, else default)")
	agentsNS := fs.String("agents-namespace", "default", "the namespace of the agents' job, where -provider nomad reads their service (NOMAD_NAMESPACE is the staged job's here, as for nomad job run)")
	var cf clusterFlags
	cf.register(fs)
	args, code, done := parseInterspersed(fs, args)
	if done {
		return code
	}
	if len(args) != 1 {
		fmt.Fprintf(stderr, "prefetch stage: want one %s, got %d arguments (see prefetch stage -h)\n", map[bool]string{true: "JOB", false: "JOBFILE"}[*cancelIt], len(args))
		return exitUsage
	}
	client, err := nomad.NewClient(api.DefaultConfig(), nomad.TokenFromEnvOrFile(""))
	if err != nil {
		fmt.Fprintf(stderr, "prefetch stage: %v\n", err)
		return exitUsage
	}
	if *cancelIt {
		return cancelStage(ctx, client, cmp.Or(*namespace, os.Getenv("NOMAD_NAMESPACE"), "default"), args[0], stderr)
	}
	if *timeout <= 0 || *interval < 10*time.Millisecond || *ttl < time.Minute {
		fmt.Fprintln(stderr, "prefetch stage: -timeout must be positive, -interval at least 10ms and -ttl at least 1m (see prefetch stage -h)")
		return exitUsage
	}
	cat, err := cf.catalogIn(cmp.Or(*agentsNS, "default"))
	if err != nil {
		fmt.Fprintf(stderr, "prefetch stage: %v (see prefetch stage -h)\n", err)
		return exitUsage
	}
	ask, err := cf.ask()
	if err != nil {
		fmt.Fprintf(stderr, "prefetch stage: %v\n", err)
		return exitUsage
	}
	job, sub, code, err := parseJob(ctx, client, args[0], varFiles, vars)
	if err != nil {
		fmt.Fprintf(stderr, "prefetch stage: %s\n", cleanLines(err.Error(), maxText))
		return code
	}
	ns, id := cmp.Or(deref(job.Namespace), "default"), deref(job.ID)
	if other := cmp.Or(*namespace, os.Getenv("NOMAD_NAMESPACE")); other != "" && ns == "default" {
		// A job file that names no namespace goes to -namespace or
		// NOMAD_NAMESPACE, as with nomad job run (a canonical parse says
		// "default" then, so a file naming "default" itself goes there too).
		ns = other
		job.Namespace = &ns
	}
	spec, err := stage.Reduce(job)
	if err != nil {
		fmt.Fprintf(stderr, "prefetch stage: %s: %s\n", args[0], clean(err.Error(), maxText))
		return exitUsage
	}
	base, err := jobModifyIndex(ctx, client, ns, id)
	if err != nil {
		fmt.Fprintf(stderr, "prefetch stage: %s\n", clean(err.Error(), maxText))
		return exitFailed
	}
	now := time.Now()
	key := ns + "/" + id
	staged := stage.Job{Namespace: ns, ID: id, Base: base, StagedAt: now.UTC(), Expires: now.Add(*ttl).UTC(), Spec: spec}
	pr := newPruner(client)
	version, _, err := stage.Update(ctx, client, stageTimeout, func(s stage.Set, bad error) (stage.Set, error) {
		if bad != nil {
			fmt.Fprintf(stderr, "stage: the staged set was unreadable and is replaced: %s\n", clean(bad.Error(), maxText))
		}
		return pr.prune(ctx, s, now, key).With(staged, now), nil
	})
	if err != nil {
		fmt.Fprintf(stderr, "prefetch stage: %s\n", clean(err.Error(), maxText))
		return exitFailed
	}
	pr.report(stderr)
	fmt.Fprintf(stderr, "stage: %s staged (staged set version %d, %s), until %s\n", clean(key, maxField), version, clean(imagesOf(spec), maxText), staged.Expires.Format(time.RFC3339))

	wctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	// While it waits, someone may register the job: the stage is moot then
	// (the agents keep the registered version's images), so it ends.
	wctx, changed := context.WithCancelCause(wctx)
	go watchJob(wctx, client, ns, id, base, *interval, changed)
	p := &progress{w: stderr, what: "the staged images of " + clean(key, maxField), prefix: "stage"}
	last, err := cluster.Wait(wctx, cat, cluster.WaitOptions{
		Gate: cluster.Gate{Staged: &cluster.StagedGate{Job: key, Version: version}}, Ask: ask, Interval: *interval, Progress: p.round,
	})
	var moved *jobChangedError
	switch {
	case errors.As(context.Cause(wctx), &moved):
		fmt.Fprintf(stderr, "prefetch stage: %s; not registered, stage it again\n", clean(moved.Error(), maxText))
		return exitFailed
	case err == nil:
		fmt.Fprintf(stderr, "stage: ready: all %d node(s) that can run %s have its images (%d not waited for)\n", last.Verdict.Live, clean(key, maxField), len(last.Verdict.Ignored))
	case errors.Is(err, cluster.ErrFitsNowhere):
		fmt.Fprintf(stderr, "prefetch stage: no node with an agent can run a group of %s: each of the %d agent(s) asked says none fits its node (check the job's datacenters, node pool, constraints and host volumes, and that the nodes meant to run it run the agent); nothing to wait for, not registered; it stays staged until %s (prefetch stage -cancel %s removes it)\n",
			clean(key, maxField), last.Verdict.Elsewhere, staged.Expires.Format(time.RFC3339), clean(id, maxField))
		writePending(stderr, last)
		return exitFailed
	case errors.Is(err, context.DeadlineExceeded):
		fmt.Fprintf(stderr, "stage: timed out after %s waiting for %s; it stays staged until %s (prefetch stage -cancel %s removes it)\n", *timeout, p.what, staged.Expires.Format(time.RFC3339), clean(id, maxField))
		writePending(stderr, last)
		return exitFailed
	default:
		fmt.Fprintf(stderr, "prefetch stage: %s\n", clean(err.Error(), maxText))
		writePending(stderr, last)
		return exitFailed
	}
	if !*runIt {
		return exitOK
	}
	return register(ctx, client, job, sub, base, stdout, stderr)
}

// parseJob has Nomad parse the job file with the variables given; code is
// the exit code of an error. The submission is what -run registers with
// the job, as `nomad job run` does (Nomad keeps it: the job's source and
// variables in its UI and /v1/job/:id/submission): the file as read, and
// every variable's value in one variables text.
func parseJob(ctx context.Context, c *nomad.Client, file string, varFiles, vars []string) (*api.Job, *api.JobSubmission, int, error) {
	hcl, err := readBounded(file)
	if err != nil {
		return nil, nil, exitUsage, err
	}
	if bad := stage.Undeclared(hcl, file, vars); len(bad) > 0 {
		return nil, nil, exitUsage, fmt.Errorf("%s: -var %s: no such variable is declared in the job file (nomad job run refuses it too: \"Undefined -var variable\"; declare it with a variable block)", file, strings.Join(bad, ", -var "))
	}
	var files []stage.VarFile
	for _, f := range varFiles {
		b, err := readBounded(f)
		if err != nil {
			return nil, nil, exitUsage, err
		}
		files = append(files, stage.VarFile{Name: f, Content: b})
	}
	variables, err := stage.Variables(os.Environ(), files, vars)
	if err != nil {
		return nil, nil, exitUsage, err
	}
	ctx, cancel := context.WithTimeout(ctx, stageTimeout)
	defer cancel()
	// Jobs().ParseHCLOpts takes no options, so no deadline: the same
	// request through Raw, which does.
	var job api.Job
	req := &api.JobsParseRequest{JobHCL: string(hcl), Variables: variables, Canonicalize: true}
	if _, err := c.API().Raw().Write("/v1/jobs/parse", req, &job, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		err = nomad.Err(err)
		var he *nomad.HTTPError
		if errors.As(err, &he) && he.Status == 400 {
			// Nomad's own message: "Failed to parse job: input.hcl:2,13-14: ..."
			return nil, nil, exitUsage, fmt.Errorf("%s: %s", file, strings.Replace(he.Body, "input.hcl", file, 1))
		}
		if errors.Is(err, nomad.ErrRefused) {
			return nil, nil, exitFailed, fmt.Errorf("parsing %s with Nomad: %w (the token needs parse-job: see prefetch-stage-policy.hcl)", file, err)
		}
		return nil, nil, exitFailed, fmt.Errorf("parsing %s with Nomad: %w", file, err)
	}
	if deref(job.ID) == "" {
		return nil, nil, exitUsage, fmt.Errorf("%s: Nomad's parse gives no job ID", file)
	}
	return &job, &api.JobSubmission{Source: string(hcl), Format: "hcl2", Variables: variables}, exitOK, nil
}

// readBounded reads a file of at most maxJobFile bytes.
func readBounded(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJobFile+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if len(b) > maxJobFile {
		return nil, fmt.Errorf("%s: over %d bytes", name, maxJobFile)
	}
	return b, nil
}

// jobModifyIndex is the registered job's JobModifyIndex, 0 when there is
// none.
func jobModifyIndex(ctx context.Context, c *nomad.Client, ns, id string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, stageTimeout)
	defer cancel()
	job, _, err := c.API().Jobs().Info(id, nomad.Query(ctx, &api.QueryOptions{Namespace: ns}))
	err = nomad.Err(err)
	var he *nomad.HTTPError
	switch {
	case errors.As(err, &he) && he.Status == 404:
		return 0, nil
	case errors.Is(err, nomad.ErrRefused):
		return 0, fmt.Errorf("reading job %s/%s: %w (the token needs read-job: see prefetch-stage-policy.hcl)", ns, id, err)
	case err != nil:
		return 0, fmt.Errorf("reading job %s/%s: %w", ns, id, err)
	}
	return deref(job.JobModifyIndex), nil
}

// jobChangedError says the job was registered by someone else while the
// stage waited.
type jobChangedError struct {
	ns, id      string
	base, index uint64
}

func (e *jobChangedError) Error() string {
	return fmt.Sprintf("job %s/%s was changed by someone else since the stage began (its modify index went from %d to %d)", e.ns, e.id, e.base, e.index)
}

// watchJob reads the job's modify index every interval until ctx is done,
// and cancels with a *jobChangedError once it is no longer base. A read
// that fails is tried again at the next.
func watchJob(ctx context.Context, c *nomad.Client, ns, id string, base uint64, interval time.Duration, cancel context.CancelCauseFunc) {
	t := time.NewTicker(max(interval, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if index, err := jobModifyIndex(ctx, c, ns, id); err == nil && index != base {
			cancel(&jobChangedError{ns: ns, id: id, base: base, index: index})
			return
		}
	}
}

// register registers job unless it changed since base, prints the
// evaluation as nomad job run -detach does, and removes the job from the
// staged set (its registered version names the images now).
func register(ctx context.Context, c *nomad.Client, job *api.Job, sub *api.JobSubmission, base uint64, stdout, stderr io.Writer) int {
	ns, id := deref(job.Namespace), deref(job.ID)
	rctx, cancel := context.WithTimeout(ctx, stageTimeout)
	resp, _, err := c.API().Jobs().RegisterOpts(job, &api.RegisterOptions{EnforceIndex: true, ModifyIndex: base, Submission: sub}, (&api.WriteOptions{Namespace: ns}).WithContext(rctx))
	cancel()
	if err != nil {
		err = nomad.Err(err)
		switch {
		case strings.Contains(err.Error(), "Enforcing job modify index"):
			fmt.Fprintf(stderr, "prefetch stage: not registered: job %s/%s was changed by someone else since the stage began (%s); stage it again\n", clean(ns, maxField), clean(id, maxField), clean(err.Error(), maxText))
		case errors.Is(err, nomad.ErrRefused):
			fmt.Fprintf(stderr, "prefetch stage: registering job %s/%s: %s (the token needs submit-job on the namespace, and for a job that mounts host volumes the host_volume capability of each: see prefetch-stage-policy.hcl)\n", clean(ns, maxField), clean(id, maxField), clean(err.Error(), maxText))
		default:
			fmt.Fprintf(stderr, "prefetch stage: registering job %s/%s: %s\n", clean(ns, maxField), clean(id, maxField), clean(err.Error(), maxText))
		}
		return exitFailed
	}
	fmt.Fprintln(stdout, "Job registration successful")
	fmt.Fprintf(stdout, "Evaluation ID: %s\n", clean(resp.EvalID, maxField))
	if resp.Warnings != "" {
		fmt.Fprintf(stderr, "stage: Nomad's warnings: %s\n", clean(resp.Warnings, maxText))
	}
	pr := newPruner(c)
	if _, _, err := stage.Update(ctx, c, stageTimeout, func(s stage.Set, bad error) (stage.Set, error) {
		if bad != nil {
			return s, bad
		}
		out, _ := s.Without(ns, id)
		return pr.prune(ctx, out, time.Now(), ""), nil
	}); err != nil {
		fmt.Fprintf(stderr, "stage: the job is registered but is still in the staged set (the agents ignore it now; the next prefetch stage drops it, else it goes at its TTL): %s\n", clean(err.Error(), maxText))
		return exitOK
	}
	pr.report(stderr)
	return exitOK
}

// pruner drops from the staged set the jobs whose stage is over
// (stage.Set.Prune): expired, or registered or deregistered since they
// were staged, which the agents ignore already but which count toward
// stage.MaxJobs until their TTL. It reads each job's JobModifyIndex once
// (stageTimeout each, at most stage.MaxJobs reads), however often
// stage.Update runs the change again after a race; a read that fails
// keeps the job and does not fail the write.
type pruner struct {
	c       *nomad.Client
	indexes map[string]prunerRead
	dropped []stage.Dropped
}

type prunerRead struct {
	index uint64
	err   error
}

func newPruner(c *nomad.Client) *pruner {
	return &pruner{c: c, indexes: map[string]prunerRead{}}
}

// prune is s without the jobs whose stage is over at now, keep aside.
func (p *pruner) prune(ctx context.Context, s stage.Set, now time.Time, keep string) stage.Set {
	out, dropped := s.Prune(now, keep, func(j stage.Job) (uint64, error) {
		r, ok := p.indexes[j.Key()]
		if !ok {
			r.index, r.err = jobModifyIndex(ctx, p.c, j.Namespace, j.ID)
			p.indexes[j.Key()] = r
		}
		return r.index, r.err
	})
	p.dropped = dropped
	return out
}

// report says on w which jobs the last write dropped.
func (p *pruner) report(w io.Writer) {
	if len(p.dropped) == 0 {
		return
	}
	parts := make([]string, 0, len(p.dropped))
	for _, d := range p.dropped {
		parts = append(parts, clean(d.Key, maxField)+" ("+d.Why+")")
	}
	fmt.Fprintf(w, "stage: dropped from the staged set, their stage over: %s\n", clean(strings.Join(parts, ", "), maxText))
}

// cancelStage removes namespace/id from the staged set.
func cancelStage(ctx context.Context, c *nomad.Client, ns, id string, stderr io.Writer) int {
	found := false
	pr := newPruner(c)
	version, _, err := stage.Update(ctx, c, stageTimeout, func(s stage.Set, bad error) (stage.Set, error) {
		if bad != nil {
			return s, fmt.Errorf("%w (prefetch stage of any job replaces it)", bad)
		}
		out, ok := s.Without(ns, id)
		found = ok
		out = pr.prune(ctx, out, time.Now(), "")
		if !ok && len(pr.dropped) == 0 {
			return s, errNotStaged
		}
		return out, nil
	})
	switch {
	case errors.Is(err, errNotStaged):
		fmt.Fprintf(stderr, "prefetch stage: job %s/%s is not staged\n", clean(ns, maxField), clean(id, maxField))
		return exitFailed
	case err != nil:
		fmt.Fprintf(stderr, "prefetch stage: %s\n", clean(err.Error(), maxText))
		return exitFailed
	}
	pr.report(stderr)
	if !found {
		fmt.Fprintf(stderr, "prefetch stage: job %s/%s is not staged\n", clean(ns, maxField), clean(id, maxField))
		return exitFailed
	}
	fmt.Fprintf(stderr, "stage: job %s/%s is no longer staged (staged set version %d)\n", clean(ns, maxField), clean(id, maxField), version)
	return exitOK
}

var errNotStaged = errors.New("not staged")

// imagesOf says what a spec stages, for the log.
func imagesOf(s stage.Spec) string {
	var images []string
	for _, g := range s.Groups {
		for _, t := range g.Tasks {
			images = append(images, t.Image)
		}
	}
	if len(images) > 5 {
		return fmt.Sprintf("%s and %d more", strings.Join(images[:5], ", "), len(images)-5)
	}
	return strings.Join(images, ", ")
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
