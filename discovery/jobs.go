package discovery

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/distribution/reference"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-prefetch/nomad-prefetch/config"
)

// rules are the nomad block's settings, compiled.
type rules struct {
	namespaces       []*regexp.Regexp
	include, exclude []*regexp.Regexp
	rewrites         []config.Rewrite
	infraImage       *string
	maxImages        int
	includeUndecided bool
	allowed          []string
	holdReadiness    bool
}

func compile(s config.Nomad) rules {
	r := rules{
		rewrites: s.Rewrites, infraImage: s.InfraImage, maxImages: s.MaxImages,
		includeUndecided: s.IncludeUndecided, allowed: s.AllowedPrefixes, holdReadiness: s.HoldReadiness,
	}
	if r.maxImages <= 0 {
		r.maxImages = config.DefaultMaxDiscoveredImages
	}
	for _, g := range s.Namespaces {
		r.namespaces = append(r.namespaces, glob(g))
	}
	for _, g := range s.Include {
		r.include = append(r.include, glob(g))
	}
	for _, g := range s.Exclude {
		r.exclude = append(r.exclude, glob(g))
	}
	return r
}

// found is one image a job's task names, as this node would run it.
type found struct {
	expected string   // normalised
	sources  []string // from the rewrites
	usedBy   string   // namespace/job/group/task
	pinned   bool     // expected names a digest
	rank     uint64   // the job's CreateIndex: the older job's images are kept first
}

// jobImages is what one job version contributes: its images for this node,
// and what could not be kept, and why.
type jobImages struct {
	version  uint64
	images   []found
	problems []string
	// jobModify and created are the job's JobModifyIndex and CreateIndex
	// (a staged job is served once the first moves on, and ranked by the
	// second).
	jobModify, created uint64
	// fits is true when a group of the job can run here (undecided ones
	// kept by include_undecided among them); blocked are the problems that
	// leave out an image this node may need (a group whose placement is
	// undecided, an image that can't be kept), which a stage waits on.
	fits    bool
	blocked []string
}

// imagesOf returns the images of every docker task of job that can run on
// n, after the rules. A stopped job has none; nor has a job, or a group,
// whose placement can't be decided here, unless includeUndecided.
func (r rules) imagesOf(job *api.Job, n node) jobImages {
	out := jobImages{version: deref(job.Version), jobModify: deref(job.JobModifyIndex), created: deref(job.CreateIndex)}
	if deref(job.Stop) {
		return out
	}
	ns, id := deref(job.Namespace), deref(job.ID)
	v, why := r.placeable(job, n)
	if v == forbids {
		return out
	}
	if v == undecided && !r.includeUndecided {
		out.problems = append(out.problems, fmt.Sprintf("%s/%s (version %d): %s", ns, id, out.version, r.skipUndecided(why)))
		out.blocked = slices.Clone(out.problems)
		return out
	}
	for _, g := range job.TaskGroups {
		if g == nil {
			continue
		}
		v, why := groupPlacement(g, n)
		if v == forbids {
			continue
		}
		if v == undecided && !r.includeUndecided {
			p := fmt.Sprintf("%s/%s/%s (version %d): %s", ns, id, deref(g.Name), out.version, r.skipUndecided(why))
			out.problems, out.blocked = append(out.problems, p), append(out.blocked, p)
			continue
		}
		out.fits = true
		for _, t := range g.Tasks {
			if t == nil || t.Driver != "docker" {
				continue
			}
			usedBy := fmt.Sprintf("%s/%s/%s/%s", ns, id, deref(g.Name), t.Name)
			f, problem := r.image(job, g, t, n)
			if problem != "" {
				p := fmt.Sprintf("%s (version %d): %s", usedBy, out.version, problem)
				out.problems = append(out.problems, p)
				if f.expected == "" {
					out.blocked = append(out.blocked, p)
				}
			}
			if f.expected != "" {
				f.usedBy, f.rank = usedBy, deref(job.CreateIndex)
				out.images = append(out.images, f)
			}
		}
	}
	return out
}

func (r rules) skipUndecided(why string) string {
	return fmt.Sprintf("placement can't be decided here (%s): its images are skipped (nomad include_undecided = true keeps them)", why)
}

// placeable says whether the job's datacenters, node pool and constraints
// let it run on n, and when undecided, which constraint is why.
func (r rules) placeable(job *api.Job, n node) (verdict, string) {
	dcs := job.Datacenters
	if len(dcs) == 0 {
		dcs = []string{"*"} // Nomad's default since 1.5
	}
	if !slices.ContainsFunc(dcs, func(dc string) bool { return glob(dc).MatchString(n.datacenter) }) {
		return forbids, ""
	}
	pool := deref(job.NodePool)
	if pool == "" {
		pool = "default"
	}
	if pool != "all" && pool != n.pool {
		return forbids, ""
	}
	return n.decide(job.Constraints)
}

// groupPlacement is what the constraints of g and of its tasks (a task's
// bind its whole group's placement) and its host volumes say of n.
func groupPlacement(g *api.TaskGroup, n node) (verdict, string) {
	if !n.volumesFit(g) {
		return forbids, ""
	}
	v, why := n.decide(g.Constraints)
	for _, t := range g.Tasks {
		if v == forbids {
			break
		}
		if t == nil {
			continue
		}
		if tv, twhy := n.decide(t.Constraints); tv == forbids || (tv == undecided && v == allows) {
			v, why = tv, twhy
		}
	}
	return v, why
}

// image returns the image of task t as this node would pull it, or a
// problem saying why it is not kept (expected empty) or kept with a caveat.
func (r rules) image(job *api.Job, g *api.TaskGroup, t *api.Task, n node) (found, string) {
	raw, _ := t.Config["image"].(string)
	if raw == "" {
		return found{}, "no image in the task's config"
	}
	meta := map[string]string{}
	maps.Copy(meta, job.Meta)
	maps.Copy(meta, g.Meta)
	maps.Copy(meta, t.Meta)
	img := interpolate(raw, n, meta)
	if strings.Contains(img, "${") {
		return found{}, fmt.Sprintf("image %q holds an interpolation this agent can't resolve (only ${node.*}, ${attr.*}, ${meta.*} and ${NOMAD_META_*} are): skipped", img)
	}
	named, err := reference.ParseNormalizedNamed(img)
	if err != nil {
		return found{}, fmt.Sprintf("image %q is not a valid image reference: %v: skipped", img, err)
	}
	_, pinned := named.(reference.Digested)
	if !pinned {
		named = reference.TagNameOnly(named)
	}
	ref := named.String()
	if (len(r.include) > 0 && !anyGlob(r.include, ref)) || anyGlob(r.exclude, ref) {
		return found{}, ""
	}
	if len(r.allowed) > 0 && !slices.ContainsFunc(r.allowed, func(p string) bool { return config.AllowedPrefix(ref, p) }) {
		return found{}, fmt.Sprintf("image %s is not under nomad allowed_prefixes (%s): skipped", ref, strings.Join(r.allowed, ", "))
	}
	f := found{expected: ref, pinned: pinned, sources: r.sourcesFor(ref)}
	forcePull, _ := t.Config["force_pull"].(bool)
	switch {
	case forcePull:
		return f, fmt.Sprintf("image %s has force_pull = true: Nomad pulls it at every start anyway, so prefetching it cannot protect the task", ref)
	case !pinned && strings.HasSuffix(ref, ":latest"):
		return f, fmt.Sprintf("image %s has no tag or the tag latest: Nomad's docker driver pulls it at every start anyway, so prefetching it cannot protect the task", ref)
	}
	return f, ""
}

// sourcesFor applies the first rewrite whose from is a prefix of ref.
func (r rules) sourcesFor(ref string) []string {
	for _, rw := range r.rewrites {
		rest, ok := strings.CutPrefix(ref, rw.From)
		if !ok {
			continue
		}
		var out []string
		for _, prefix := range rw.Sources {
			src := prefix + rest
			named, err := reference.ParseNormalizedNamed(src)
			if err != nil || named.String() == ref {
				continue
			}
			if _, pinned := named.(reference.Digested); !pinned {
				named = reference.TagNameOnly(named)
			}
			out = append(out, named.String())
		}
		return out
	}
	return nil
}

// interpolate resolves ${node.*}, ${attr.*}, ${meta.*} from the node and
// ${NOMAD_META_key} from the merged job, group and task meta; anything else
// is left as it is.
func interpolate(s string, n node, meta map[string]string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			b.WriteString(s)
			return b.String()
		}
		target := s[i : i+j+1]
		b.WriteString(s[:i])
		if v, ok := resolveImageVar(target, n, meta); ok {
			b.WriteString(v)
		} else {
			b.WriteString(target)
		}
		s = s[i+j+1:]
	}
}

func resolveImageVar(target string, n node, meta map[string]string) (string, bool) {
	if key, ok := strings.CutPrefix(strings.TrimSuffix(strings.TrimPrefix(target, "${"), "}"), "NOMAD_META_"); ok {
		if v, ok := meta[key]; ok {
			return v, true
		}
		for k, v := range meta { // Nomad also exposes the key upper-cased
			if strings.EqualFold(k, key) {
				return v, true
			}
		}
		return "", false
	}
	if !knownTarget(target) {
		return "", false
	}
	return n.resolve(target)
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
