package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/backoff"
)

// Gate is what `prefetch wait` waits for.
type Gate struct {
	// Images are normalised references (NormalizeRef) that every live
	// agent must report present. An agent that does not list one (its
	// config has not caught up) does not have it. None: every image of
	// each agent's own config, the agent's Ready.
	Images []string
	// Staged, when set, waits for a staged job instead (prefetch stage):
	// only agents whose node can run one of its groups are waited for.
	Staged *StagedGate
}

// StagedGate is a staged job every agent whose node can run one of its
// groups must have read (Version of the staged set or a later one) and
// hold every image of.
type StagedGate struct {
	Job     string // namespace/id
	Version uint64
}

// Pending is an agent that does not have what the gate waits for, and why.
type Pending struct {
	Agent
	Why string `json:"why"`
}

// Verdict is the gate's judgement of one round of reports.
type Verdict struct {
	// Live counts the agents waited for: every agent the catalog lists
	// but those it reports down.
	Live int `json:"live"`
	// Pending are the live agents that are not ready yet, an agent that
	// could not be asked among them.
	Pending []Pending `json:"pending"`
	// Ignored are the agents not waited for: those the catalog reports
	// down, and for a staged job those whose node can run none of its
	// groups.
	Ignored []Pending `json:"ignored,omitempty"`
	// Elsewhere counts the agents of Ignored whose node can run no group
	// of the staged job (they read its version and said so).
	Elsewhere int `json:"elsewhere,omitempty"`
}

// Ready reports whether there are live agents and every one is ready.
func (v Verdict) Ready() bool { return v.Live > 0 && len(v.Pending) == 0 }

// Judge applies the gate to one round of reports.
func (g Gate) Judge(reports []Report) Verdict {
	var v Verdict
	for _, r := range reports {
		if r.Agent.Down != "" {
			v.Ignored = append(v.Ignored, Pending{Agent: r.Agent, Why: r.Agent.Down})
			continue
		}
		if g.Staged != nil && r.Err == nil && g.Staged.elsewhere(r.Snapshot) {
			v.Ignored = append(v.Ignored, Pending{Agent: r.Agent, Why: "no group of " + g.Staged.Job + " can run on this node"})
			v.Elsewhere++
			continue
		}
		v.Live++
		if why := g.pending(r); why != "" {
			v.Pending = append(v.Pending, Pending{Agent: r.Agent, Why: why})
		}
	}
	return v
}

// pending says why r's agent does not pass the gate, or "" if it does.
func (g Gate) pending(r Report) string {
	if r.Err != nil {
		return "unreachable: " + r.Err.Error()
	}
	s := r.Snapshot
	ok, why := s.Ready()
	if s.ConfigLoaded.IsZero() || s.DockerError != "" {
		return why // nothing it says about its images counts
	}
	if g.Staged != nil {
		return g.Staged.pending(s)
	}
	if len(g.Images) == 0 {
		if ok {
			return ""
		}
		var missing []string
		for _, img := range s.Missing() {
			missing = append(missing, imageWhy(img))
		}
		return why + ": " + list(missing, 5)
	}
	byRef := map[string]agent.ImageStatus{}
	for _, img := range s.Images {
		byRef[normalized(img.Expected)] = img
	}
	missing := missingSet(s)
	var not []string
	for _, ref := range g.Images {
		img, listed := byRef[ref]
		switch {
		case !listed && s.ConfigError != "":
			not = append(not, ref+" not in its config (the file on disk does not load: "+firstLine(s.ConfigError)+")")
		case !listed:
			not = append(not, ref+" not in its config yet")
		case missing[img.Expected]:
			not = append(not, imageWhy(img))
		}
	}
	return list(not, 5)
}

// staged is the job as s's agent stages it, and whether it has read the
// gate's version.
func (g *StagedGate) staged(s agent.Snapshot) (agent.StagedJob, bool, bool) {
	if s.Nomad == nil || s.Nomad.Staged.Version < g.Version {
		return agent.StagedJob{}, false, false
	}
	for _, j := range s.Nomad.Staged.Jobs {
		if j.Job == g.Job {
			return j, true, true
		}
	}
	return agent.StagedJob{}, false, true
}

// elsewhere reports whether s's agent has read the gate's version and says
// that no group of the job can run on its node, nor may (none undecided).
func (g *StagedGate) elsewhere(s agent.Snapshot) bool {
	j, found, read := g.staged(s)
	return read && found && j.State == agent.StagedActive && !j.Fits && len(j.Blocked) == 0
}

// pending says why s's agent does not hold the staged job's images yet.
func (g *StagedGate) pending(s agent.Snapshot) string {
	if s.Nomad == nil {
		return "discovery is off on this agent (no nomad block): it does not read staged sets"
	}
	st := s.Nomad.Staged
	j, found, read := g.staged(s)
	switch {
	case !read && st.Error != "":
		return fmt.Sprintf("has not read version %d of the staged set (it has %d): %s", g.Version, st.Version, firstLine(st.Error))
	case !read:
		return fmt.Sprintf("has not read version %d of the staged set yet (it has %d)", g.Version, st.Version)
	case !found:
		return fmt.Sprintf("its staged set (version %d) does not hold %s (cancelled, or replaced by another stage?)", st.Version, g.Job)
	case j.State != agent.StagedActive:
		return fmt.Sprintf("%s is %s on this agent, not staged", g.Job, j.State)
	}
	not := slices.Clone(j.Blocked)
	byRef := map[string]agent.ImageStatus{}
	for _, img := range s.Images {
		byRef[img.Expected] = img
	}
	missing := missingSet(s)
	for _, ref := range j.Images {
		img, listed := byRef[ref]
		switch {
		case !listed:
			not = append(not, ref+" not applied yet")
		case missing[ref]:
			not = append(not, imageWhy(img))
		}
	}
	return list(not, 5)
}

// imageWhy is a missing image and its state, with the failure's first line.
func imageWhy(img agent.ImageStatus) string {
	why := img.Expected + " " + img.State
	if img.State == agent.StateFailed && img.LastError != "" {
		why += " (" + firstLine(img.LastError) + ")"
	}
	return why
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	if len(line) > 200 {
		line = line[:200] + "..."
	}
	return line
}

// list joins items with "; ", the first max of them, then "and N more".
func list(items []string, max int) string {
	if len(items) > max {
		return strings.Join(items[:max], "; ") + fmt.Sprintf("; and %d more", len(items)-max)
	}
	return strings.Join(items, "; ")
}

// Round is one look at the cluster: the catalog, then every agent.
type Round struct {
	Verdict Verdict
	// Err is why the catalog could not be read; Verdict is then empty.
	Err error
}

// WaitOptions configure Wait.
type WaitOptions struct {
	Gate Gate
	Ask  AskOptions
	// Interval is the pause between rounds (default 5s).
	Interval time.Duration
	// Progress is told each round; nil: nobody.
	Progress func(Round)
}

// ErrFitsNowhere ends a wait for a staged job that no agent's node can
// run: every live agent read the job's version and said that none of its
// groups fits its node, so there is nobody to wait for.
var ErrFitsNowhere = errors.New("no node with an agent can run a group of the staged job")

// Wait looks at the cluster in rounds until the gate is passed. It returns
// the last round and nil when it is; the last round and an error when ctx
// is done first (ctx's error), the catalog fails in a way that waiting
// won't fix (Permanent: a refused token, a bad address), or a staged job
// fits nowhere (ErrFitsNowhere). A catalog that can't be reached is only
// this round's Err: it may come back.
func Wait(ctx context.Context, cat Catalog, o WaitOptions) (Round, error) {
	if o.Interval <= 0 {
		o.Interval = 5 * time.Second
	}
	var last Round
	for {
		r := look(ctx, cat, o)
		if ctx.Err() != nil {
			return last, fmt.Errorf("waiting for the gate: %w", ctx.Err())
		}
		last = r
		if o.Progress != nil {
			o.Progress(r)
		}
		switch {
		case r.Err != nil && Permanent(r.Err):
			return r, fmt.Errorf("reading %s: %w", cat, r.Err)
		case r.Err == nil && r.Verdict.Ready():
			return r, nil
		case r.Err == nil && r.Verdict.Live == 0 && r.Verdict.Elsewhere > 0:
			return r, ErrFitsNowhere
		}
		if err := backoff.Sleep(ctx, o.Interval); err != nil {
			return last, fmt.Errorf("waiting for the gate: %w", err)
		}
	}
}

// look makes one round.
func look(ctx context.Context, cat Catalog, o WaitOptions) Round {
	agents, err := cat.Agents(ctx)
	if err != nil {
		return Round{Err: err}
	}
	return Round{Verdict: o.Gate.Judge(Ask(ctx, agents, o.Ask))}
}
