package discovery

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/backoff"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
	"github.com/nomad-prefetch/nomad-prefetch/stage"
)

// stagedWait is how long one blocking read of the staged set waits: Nomad
// answers at once when the variable is written, so this only bounds how
// long a quiet connection lasts.
const stagedWait = 5 * time.Minute

// quickRead is the shortest pause after a read that came back at once with
// nothing new (a Nomad that does not block on a variable that does not
// exist yet: not recorded), doubling up to slowestRead while it goes on,
// so that such a Nomad is asked once a second at most by each agent, and
// far less after a while.
const (
	quickRead   = time.Second
	slowestRead = 16 * time.Second
)

// stagedState is the staged set as last read.
type stagedState struct {
	version uint64 // its variable's ModifyIndex, or the variables' index while it does not exist
	set     stage.Set
	err     string
	// nextExpiry is when the first staged job still kept expires (zero:
	// none), for watchExpiry.
	nextExpiry time.Time
}

// expiryCheck is how often the staged jobs' TTLs are checked: a staged job
// is dropped at most this long after it expires.
const expiryCheck = 10 * time.Second

// watchExpiry reports a new set when a staged job's TTL has passed, which
// no read of Nomad tells.
func watchExpiry(ctx context.Context, st *state, pub *publisher) {
	t := time.NewTicker(expiryCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var due bool
		pub.with(func() { due = !st.staged.nextExpiry.IsZero() && !st.now().Before(st.staged.nextExpiry) })
		if due {
			pub.soon(st)
		}
	}
}

// followStaged reads the staged set with blocking queries until ctx is
// done, putting each new version into st. A set that can't be read, or
// is refused, is an error in the status; the last good one is kept.
func (d *Discoverer) followStaged(ctx context.Context, c *nomad.Client, st *state, pub *publisher, log *slog.Logger) {
	timeout, retry := cmpOr(d.CallTimeout, 30*time.Second), d.retry()
	var index uint64
	pause, first := time.Duration(0), true
	for failures := 0; ctx.Err() == nil; {
		start := time.Now()
		set, version, err := stage.Watch(ctx, c, index, stagedWait, timeout)
		if ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, stage.ErrBad) {
			failures++
			if failures == 1 {
				log.Warn("discovery: can't read the staged set; the last one read is kept", "error", err.Error())
			}
			pub.with(func() { st.staged.err = err.Error() })
			pub.soon(st)
			if backoff.Sleep(ctx, retry.Delay(failures, rand.Float64())) != nil {
				return
			}
			continue
		}
		if failures > 0 {
			log.Info("discovery: the staged set is read again")
			failures = 0
		}
		switch {
		case version != index || first:
			first = false
			problem := ""
			if err != nil {
				problem = clip("the staged set is refused, the last good one is kept: "+err.Error(), maxProblemLen)
				if st.stagedErr() != problem {
					log.Warn("discovery: "+problem, "version", version)
				}
			}
			var handed []*api.Job
			if problem == "" {
				handed = handovers(ctx, c, st, pub, set, timeout)
			}
			pub.with(func() {
				st.staged.version, st.staged.err = version, problem
				if problem == "" {
					st.staged.set = set
					for _, job := range handed {
						st.handOver(job)
					}
				}
			})
			pub.now(st)
			pause = 0
		case time.Since(start) < quickRead:
			pause = min(max(2*pause, quickRead), slowestRead)
			if backoff.Sleep(ctx, pause) != nil {
				return
			}
		default:
			pause = 0
		}
		index = version
	}
}

func (st *state) stagedErr() string { return st.staged.err }

// handovers reads the jobs that next no longer stages but that this agent
// still keeps as staged (not registered since, as far as it knows), and
// returns those registered since. A stager that registers a job removes it
// from the set just after (prefetch stage -run), and this agent learns the
// two through two streams with no order between them: the set's blocking
// read may answer before the Job event of the registration arrives, and
// dropping the staged job then would leave its images under neither for a
// moment. With the registered version read here and applied in the same
// publish as the set (handOver), the images stay listed throughout. A job
// still at its Base or not found (a -cancel), or that can't be read, is not
// returned: the staged job goes, as before. At most stage.MaxJobs reads,
// each bounded by timeout.
func handovers(ctx context.Context, c *nomad.Client, st *state, pub *publisher, next stage.Set, timeout time.Duration) []*api.Job {
	var gone []stage.Job
	pub.with(func() {
		if !st.known {
			return
		}
		now := st.now()
		for _, j := range st.staged.set.Jobs {
			if _, still := next.Find(j.Namespace, j.ID); still || j.Expired(now) || !st.namespaceWanted(j.Namespace) {
				continue
			}
			if reg, ok := st.registered[j.Key()]; ok && reg != j.Base {
				continue // handed over already
			}
			gone = append(gone, j)
		}
	})
	var out []*api.Job
	for _, j := range gone[:min(len(gone), stage.MaxJobs)] {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		job, _, err := c.API().Jobs().Info(j.ID, nomad.Query(rctx, &api.QueryOptions{Namespace: j.Namespace}))
		cancel()
		if err == nil && job != nil && deref(job.JobModifyIndex) != j.Base {
			out = append(out, job)
		}
	}
	return out
}

// handOver applies job, read at a staged job's handover, unless the Job
// events brought this version or a newer one already.
func (st *state) handOver(job *api.Job) {
	if prev, ok := st.registered[jobKey(deref(job.Namespace), deref(job.ID))]; ok && prev >= deref(job.JobModifyIndex) {
		return
	}
	st.upsert(job)
}

// stagedJobs is what the staged set gives this node at now: the images of
// each staged job still staged, keyed like a registered job's (with usedBy
// saying "staged"), and its report for the status.
func (st *state) stagedJobs(now time.Time) (map[string]jobImages, []agent.StagedJob) {
	if !st.known {
		return nil, nil
	}
	images := map[string]jobImages{}
	var report []agent.StagedJob
	st.staged.nextExpiry = time.Time{}
	for _, j := range st.staged.set.Jobs {
		if !st.namespaceWanted(j.Namespace) {
			continue
		}
		r := agent.StagedJob{Job: j.Key(), State: agent.StagedActive, Expires: j.Expires}
		reg, registered := st.registered[j.Key()]
		switch {
		case j.Expired(now):
			r.State = agent.StagedExpired
		case registered && reg != j.Base:
			r.State = agent.StagedRegistered
		}
		if r.State == agent.StagedActive {
			if st.staged.nextExpiry.IsZero() || j.Expires.Before(st.staged.nextExpiry) {
				st.staged.nextExpiry = j.Expires
			}
			ji := st.rules.imagesOf(j.Spec.APIJob(j.Namespace, j.ID), st.node)
			rank := st.staged.version // a new job: ranked as if registered now
			if created, ok := st.created[j.Key()]; ok {
				rank = created
			}
			for i := range ji.images {
				ji.images[i].rank = rank
				ji.images[i].usedBy += " (staged)"
				r.Images = append(r.Images, ji.images[i].expected)
			}
			r.Fits, r.Blocked = ji.fits, clipAll(ji.blocked)
			slices.Sort(r.Images)
			r.Images = slices.Compact(r.Images)
			images["staged:"+j.Key()] = ji
		}
		report = append(report, r)
	}
	return images, report
}

func clipAll(ps []string) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, clip(strings.ReplaceAll(p, "(version 0)", "(staged)"), maxProblemLen))
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
