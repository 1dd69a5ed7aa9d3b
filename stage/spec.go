package stage

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/nomad/api"
)

// Spec is what of a job's version decides which images a node keeps for
// it: its placement (datacenters, node pool, job, group and task
// constraints, and each group's host volumes) and its docker tasks' images
// with the meta they may interpolate. It is the part of the job discovery reads of a registered
// job (Reduce keeps exactly that), so a staged job and the same version
// registered give a node the same images.
type Spec struct {
	Datacenters []string          `json:"datacenters,omitempty"`
	NodePool    string            `json:"node_pool,omitempty"`
	Constraints []Constraint      `json:"constraints,omitempty"`
	Meta        map[string]string `json:"meta,omitempty"`
	Groups      []Group           `json:"groups"`
}

// Group is one task group: its constraints, meta and docker tasks. Its
// host volumes are among its constraints, with the operand
// HostVolumeOperand (see HostVolumeConstraint): a field of their own would
// make every agent older than them refuse the whole set, since Decode
// refuses a field it does not know, while an operand it does not know only
// leaves the group undecided there (skipped and reported unless
// include_undecided, and waited for by a stage as undecided).
type Group struct {
	Name        string            `json:"name"`
	Constraints []Constraint      `json:"constraints,omitempty"`
	Meta        map[string]string `json:"meta,omitempty"`
	Tasks       []Task            `json:"tasks"`
}

// Task is one docker task: the image its config names, force_pull, and its
// constraints and meta.
type Task struct {
	Name        string            `json:"name"`
	Image       string            `json:"image"`
	ForcePull   bool              `json:"force_pull,omitempty"`
	Constraints []Constraint      `json:"constraints,omitempty"`
	Meta        map[string]string `json:"meta,omitempty"`
}

// Constraint is a Nomad constraint as the API spells it.
type Constraint struct {
	LTarget string `json:"l,omitempty"`
	Operand string `json:"op,omitempty"`
	RTarget string `json:"r,omitempty"`
}

// HostVolumeOperand is the operand of a group's constraint that stands for
// a host volume it mounts: LTarget is the volume's source, RTarget
// "read_only" or "read_write", then for a per_alloc volume ",per_alloc=N"
// with N the group's count. Nomad has no such operand (it refuses a job
// constraint naming it), so Reduce refuses a job that uses it itself.
const HostVolumeOperand = "host_volume"

// HostVolumeConstraint is the constraint that carries host volume request v
// of a group of count allocations.
func HostVolumeConstraint(v *api.VolumeRequest, count int) Constraint {
	mode := "read_write"
	if v.ReadOnly {
		mode = "read_only"
	}
	if v.PerAlloc {
		mode += ",per_alloc=" + strconv.Itoa(count)
	}
	return Constraint{LTarget: v.Source, Operand: HostVolumeOperand, RTarget: mode}
}

// hostVolume is the request a HostVolumeConstraint carries, or false when c
// is not one (or is malformed: it is then an unknown operand, undecided).
func hostVolume(c Constraint) (v *api.VolumeRequest, count int, ok bool) {
	if c.Operand != HostVolumeOperand || c.LTarget == "" {
		return nil, 0, false
	}
	mode, per, perAlloc := strings.Cut(c.RTarget, ",per_alloc=")
	v = &api.VolumeRequest{Name: c.LTarget, Type: "host", Source: c.LTarget, PerAlloc: perAlloc}
	switch mode {
	case "read_only":
		v.ReadOnly = true
	case "read_write":
	default:
		return nil, 0, false
	}
	count = 1
	if perAlloc {
		n, err := strconv.Atoi(per)
		if err != nil || n < 0 || strconv.Itoa(n) != per {
			return nil, 0, false
		}
		count = n
	}
	return v, count, true
}

// Reduce keeps of job (as /v1/jobs/parse answers it) what Spec holds, and
// counts its docker tasks: a job with none, or more than MaxImagesPerJob,
// is an error naming it. A group's host volumes (type "host") become
// constraints (HostVolumeConstraint); CSI volumes are not kept: whether a
// node can mount one is the CSI plugin's and the volume's claims' to say,
// which no agent reads, so they do not restrict where images are fetched.
func Reduce(job *api.Job) (Spec, error) {
	s := Spec{Datacenters: job.Datacenters, NodePool: deref(job.NodePool), Constraints: constraints(job.Constraints), Meta: job.Meta}
	n := 0
	for _, g := range job.TaskGroups {
		if g == nil {
			continue
		}
		group := Group{Name: deref(g.Name), Constraints: constraints(g.Constraints), Meta: g.Meta}
		for _, name := range slices.Sorted(maps.Keys(g.Volumes)) {
			if v := g.Volumes[name]; v != nil && v.Type == "host" {
				count := 1
				if g.Count != nil {
					count = *g.Count
				}
				group.Constraints = append(group.Constraints, HostVolumeConstraint(v, count))
			}
		}
		for _, t := range g.Tasks {
			if t == nil || t.Driver != "docker" {
				continue
			}
			image, _ := t.Config["image"].(string)
			forcePull, _ := t.Config["force_pull"].(bool)
			group.Tasks = append(group.Tasks, Task{Name: t.Name, Image: image, ForcePull: forcePull, Constraints: constraints(t.Constraints), Meta: t.Meta})
			n++
		}
		if len(group.Tasks) > 0 {
			s.Groups = append(s.Groups, group)
		}
	}
	if n == 0 {
		return Spec{}, fmt.Errorf("job %s has no docker task: nothing to stage", deref(job.ID))
	}
	if reserved(job) {
		return Spec{}, fmt.Errorf("job %s: a constraint with the operator %q, which is not Nomad's (it would refuse the job)", deref(job.ID), HostVolumeOperand)
	}
	if err := s.check(); err != nil {
		return Spec{}, fmt.Errorf("job %s: %w", deref(job.ID), err)
	}
	return s, nil
}

// reserved reports whether one of job's own constraints uses
// HostVolumeOperand.
func reserved(job *api.Job) bool {
	uses := func(cs []*api.Constraint) bool {
		return slices.ContainsFunc(cs, func(c *api.Constraint) bool { return c != nil && c.Operand == HostVolumeOperand })
	}
	if uses(job.Constraints) {
		return true
	}
	for _, g := range job.TaskGroups {
		if g == nil {
			continue
		}
		if uses(g.Constraints) || slices.ContainsFunc(g.Tasks, func(t *api.Task) bool { return t != nil && uses(t.Constraints) }) {
			return true
		}
	}
	return false
}

// APIJob is the spec as a registered job of namespace ns and id, with only
// the fields Spec holds set: what discovery reduces a registered job from.
// A group's host volume constraints become its Volumes (and Count) again.
func (s Spec) APIJob(ns, id string) *api.Job {
	job := &api.Job{
		ID: &id, Namespace: &ns, Datacenters: s.Datacenters, Constraints: apiConstraints(s.Constraints), Meta: s.Meta,
	}
	if s.NodePool != "" {
		job.NodePool = &s.NodePool
	}
	for _, g := range s.Groups {
		tg := &api.TaskGroup{Name: &g.Name, Meta: g.Meta}
		var rest []Constraint
		for _, c := range g.Constraints {
			v, count, ok := hostVolume(c)
			if !ok {
				rest = append(rest, c)
				continue
			}
			if tg.Volumes == nil {
				tg.Volumes = map[string]*api.VolumeRequest{}
			}
			// Keyed by position: two requests may name one source.
			tg.Volumes[strconv.Itoa(len(tg.Volumes))] = v
			if v.PerAlloc {
				tg.Count = &count
			}
		}
		tg.Constraints = apiConstraints(rest)
		for _, t := range g.Tasks {
			config := map[string]any{"image": t.Image}
			if t.ForcePull {
				config["force_pull"] = true
			}
			tg.Tasks = append(tg.Tasks, &api.Task{Name: t.Name, Driver: "docker", Config: config, Constraints: apiConstraints(t.Constraints), Meta: t.Meta})
		}
		job.TaskGroups = append(job.TaskGroups, tg)
	}
	return job
}

// check bounds what a job submitter wrote: the tasks and every string.
func (s Spec) check() error {
	n := 0
	strs := append([]string{s.NodePool}, s.Datacenters...)
	strs = appendConstraints(appendMeta(strs, s.Meta), s.Constraints)
	for _, g := range s.Groups {
		strs = appendConstraints(appendMeta(append(strs, g.Name), g.Meta), g.Constraints)
		for _, t := range g.Tasks {
			n++
			strs = appendConstraints(appendMeta(append(strs, t.Name, t.Image), t.Meta), t.Constraints)
		}
	}
	if n > MaxImagesPerJob {
		return fmt.Errorf("%d docker tasks, over the limit of %d", n, MaxImagesPerJob)
	}
	for _, v := range strs {
		if len(v) > maxString {
			return fmt.Errorf("a value of %d bytes (%q...), over the limit of %d", len(v), clip(v)[:min(len(v), 40)], maxString)
		}
	}
	return nil
}

func appendMeta(strs []string, meta map[string]string) []string {
	for k, v := range meta {
		strs = append(strs, k, v)
	}
	return strs
}

func appendConstraints(strs []string, cs []Constraint) []string {
	for _, c := range cs {
		strs = append(strs, c.LTarget, c.Operand, c.RTarget)
	}
	return strs
}

func constraints(cs []*api.Constraint) []Constraint {
	var out []Constraint
	for _, c := range cs {
		if c != nil {
			out = append(out, Constraint{LTarget: c.LTarget, Operand: c.Operand, RTarget: c.RTarget})
		}
	}
	return out
}

func apiConstraints(cs []Constraint) []*api.Constraint {
	var out []*api.Constraint
	for _, c := range cs {
		out = append(out, &api.Constraint{LTarget: c.LTarget, Operand: c.Operand, RTarget: c.RTarget})
	}
	return out
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
