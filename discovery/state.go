package discovery

import (
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/config"
)

// maxProblems bounds the problems the status lists (the newest are kept).
const maxProblems = 50

// state is what discovery knows: this node, and per job the images it
// names here. Only Discoverer.Run's goroutine touches it.
type state struct {
	rules  rules
	nodeID string // the node to follow; "" for the agent's own
	node   node
	known  bool // node is set
	jobs   map[string]jobImages
	index  uint64
	listed bool // every job was listed once

	problems []string        // newest last
	reported map[string]bool // problems already logged, per job version
	log      *slog.Logger

	live       bool
	err        string
	errorSince time.Time
}

func newState(s config.Nomad, log *slog.Logger) *state {
	return &state{rules: compile(s), nodeID: s.NodeID, jobs: map[string]jobImages{}, reported: map[string]bool{}, log: log}
}

func jobKey(ns, id string) string { return ns + "/" + id }

// namespaceWanted reports whether jobs of namespace ns are followed.
func (st *state) namespaceWanted(ns string) bool { return anyGlob(st.rules.namespaces, ns) }

// upsert records job's images, as registered (a stopped job has none).
func (st *state) upsert(job *api.Job) {
	ns, id := deref(job.Namespace), deref(job.ID)
	if !st.namespaceWanted(ns) {
		return
	}
	st.put(jobKey(ns, id), st.rules.imagesOf(job, st.node))
}

// put records the images of the job at key, reporting its problems once.
func (st *state) put(key string, ji jobImages) {
	for _, p := range ji.problems {
		if !st.reported[p] {
			st.reported[p] = true
			st.log.Warn("discovery: "+p, "job", key)
			st.problems = append(st.problems, p)
			if len(st.problems) > maxProblems {
				st.problems = st.problems[len(st.problems)-maxProblems:]
			}
		}
	}
	if len(ji.images) == 0 {
		delete(st.jobs, key)
		return
	}
	st.jobs[key] = ji
}

// remove forgets a deregistered job.
func (st *state) remove(ns, id string) { delete(st.jobs, jobKey(ns, id)) }

// set is the discovered set as the loop takes it.
func (st *state) set() agent.Discovered {
	byRef := map[string]*config.Image{}
	usedBy := map[string][]string{}
	for _, ji := range st.jobs {
		for _, f := range ji.images {
			if _, ok := byRef[f.expected]; !ok {
				byRef[f.expected] = &config.Image{Expected: f.expected, Sources: f.sources, Platform: st.node.platform()}
			}
			usedBy[f.expected] = append(usedBy[f.expected], f.usedBy)
		}
	}
	if infra := st.infraImage(); infra != "" {
		if _, ok := byRef[infra]; !ok {
			byRef[infra] = &config.Image{Expected: infra, Platform: st.node.platform()}
		}
		usedBy[infra] = append(usedBy[infra], "nomad infra_image (the pause container of bridge networking)")
	}
	d := agent.Discovered{UsedBy: usedBy, Images: make([]config.Image, 0, len(byRef))}
	for ref, img := range byRef {
		sort.Strings(usedBy[ref])
		img.Name = usedBy[ref][0]
		d.Images = append(d.Images, *img)
	}
	slices.SortFunc(d.Images, func(a, b config.Image) int { return strings.Compare(a.Expected, b.Expected) })
	d.Status = agent.DiscoveryStatus{
		Node: st.node.name, Jobs: len(st.jobs), Images: len(d.Images), Index: st.index, Listed: st.listed,
		Live: st.live, Error: st.err, Problems: slices.Clone(st.problems),
	}
	if st.err != "" {
		t := st.errorSince
		d.Status.ErrorSince = &t
	}
	return d
}

// infraImage is the pause image to keep, "" for none.
func (st *state) infraImage() string {
	if st.rules.infraImage != nil {
		return *st.rules.infraImage
	}
	if arch := st.node.attrs["cpu.arch"]; st.known && arch != "" {
		return config.DefaultInfraImage(arch)
	}
	return ""
}
