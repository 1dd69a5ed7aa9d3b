package discovery

import (
	"cmp"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/config"
)

// Bounds on what the status lists: problems (the newest are kept), the
// images left out over max_images (the first in order), the tasks naming one
// image, and one problem's length.
const (
	maxProblems     = 50
	maxLeftOutShown = 20
	maxUsedBy       = 10
	maxProblemLen   = 512
)

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

	problems []string            // newest last
	reported map[string][]string // per job key, the problems of its version last logged
	log      *slog.Logger
	leftOut  int // images left out over max_images at the last set, to log changes once

	live       bool
	err        string
	errorSince time.Time
	relay      *agent.RelayStatus // nil: the relay is off

	// staged is the staged set as read; registered and created are every
	// followed job's JobModifyIndex and CreateIndex, by job key, to tell
	// when a staged job has been registered since, and how to rank it.
	staged              stagedState
	registered, created map[string]uint64
	// now is the clock the staged jobs' TTLs are read with.
	now func() time.Time
}

func newState(s config.Nomad, log *slog.Logger) *state {
	return &state{
		rules: compile(s), nodeID: s.NodeID, jobs: map[string]jobImages{}, reported: map[string][]string{}, log: log,
		registered: map[string]uint64{}, created: map[string]uint64{}, now: time.Now,
	}
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

// relist replaces every job with those of a new list.
func (st *state) relist(jobs map[string]jobImages) {
	st.jobs = map[string]jobImages{}
	st.registered, st.created = map[string]uint64{}, map[string]uint64{}
	st.forgetReported(jobs)
	for key, ji := range jobs {
		st.put(key, ji)
	}
}

// put records the images of the job at key, logging each of its problems
// once while it lasts: a new version of the job with the same problem is not
// logged again (a submitter re-registering a job in a loop would otherwise
// write a line per version on every node). What is remembered is per job,
// so re-registrations don't make it grow.
func (st *state) put(key string, ji jobImages) {
	st.registered[key], st.created[key] = ji.jobModify, ji.created
	var seen []string
	for i, p := range ji.problems {
		same := clip(sansVersion(p), maxProblemLen)
		p = clip(p, maxProblemLen)
		ji.problems[i] = p
		seen = append(seen, same)
		if !slices.Contains(st.reported[key], same) {
			st.log.Warn("discovery: "+p, "job", key)
			st.problems = append(st.problems, p)
			if len(st.problems) > maxProblems {
				st.problems = st.problems[len(st.problems)-maxProblems:]
			}
		}
	}
	if len(seen) > 0 {
		st.reported[key] = seen
	} else {
		delete(st.reported, key)
	}
	if len(ji.images) == 0 {
		delete(st.jobs, key)
		return
	}
	st.jobs[key] = ji
}

// versionPart is the version a problem names, "(version N)".
var versionPart = regexp.MustCompile(`\(version [0-9]+\)`)

// sansVersion is a problem without the job version it names, to tell a
// problem that lasts across versions from a new one.
func sansVersion(p string) string { return versionPart.ReplaceAllString(p, "(version)") }

// forgetReported drops what was logged for jobs not in keep (a new list).
func (st *state) forgetReported(keep map[string]jobImages) {
	for key := range st.reported {
		if _, ok := keep[key]; !ok {
			delete(st.reported, key)
		}
	}
}

// remove forgets a deregistered job.
func (st *state) remove(ns, id string) {
	delete(st.jobs, jobKey(ns, id))
	delete(st.reported, jobKey(ns, id))
	delete(st.registered, jobKey(ns, id))
	delete(st.created, jobKey(ns, id))
}

// set is the discovered set as the loop takes it. At most max_images of
// the images the jobs name are in it (the infra image aside): ordered by the
// CreateIndex of the oldest job naming each, then by reference, so a flood
// of new jobs can't push out the images of the jobs already there, and
// every node of the same jobs leaves out the same ones. The status lists
// what was left out, and the log says so once each time it starts and ends.
func (st *state) set() agent.Discovered {
	type kept struct {
		img    config.Image
		rank   uint64
		usedBy []string
	}
	byRef := map[string]*kept{}
	stagedImages, stagedReport := st.stagedJobs(st.now())
	for _, ji := range joined(st.jobs, stagedImages) {
		for _, f := range ji.images {
			k, ok := byRef[f.expected]
			if !ok {
				k = &kept{img: config.Image{Expected: f.expected, Sources: f.sources, Platform: st.node.platform()}, rank: f.rank}
				byRef[f.expected] = k
			}
			k.rank = min(k.rank, f.rank)
			k.usedBy = append(k.usedBy, f.usedBy)
		}
	}
	all := make([]*kept, 0, len(byRef))
	for _, k := range byRef {
		sort.Strings(k.usedBy)
		if len(k.usedBy) > maxUsedBy {
			k.usedBy = append(k.usedBy[:maxUsedBy], fmt.Sprintf("and %d more", len(k.usedBy)-maxUsedBy))
		}
		k.img.Name = k.usedBy[0]
		all = append(all, k)
	}
	slices.SortFunc(all, func(a, b *kept) int {
		return cmp.Or(cmp.Compare(a.rank, b.rank), strings.Compare(a.img.Expected, b.img.Expected))
	})
	limit := st.rules.maxImages
	var leftOut []string
	if len(all) > limit {
		for _, k := range all[limit:min(len(all), limit+maxLeftOutShown)] {
			leftOut = append(leftOut, fmt.Sprintf("%s (used by %s): over nomad max_images (%d)", k.img.Expected, k.img.Name, limit))
		}
		all = all[:limit]
	}
	st.logLeftOut(len(byRef)-len(all), leftOut)

	usedBy := make(map[string][]string, len(all)+1)
	d := agent.Discovered{UsedBy: usedBy, Images: make([]config.Image, 0, len(all)+1)}
	for _, k := range all {
		d.Images = append(d.Images, k.img)
		usedBy[k.img.Expected] = k.usedBy
	}
	if infra := st.infraImage(); infra != "" {
		if _, ok := usedBy[infra]; !ok {
			d.Images = append(d.Images, config.Image{Expected: infra, Name: infraUse, Platform: st.node.platform()})
		}
		usedBy[infra] = append(usedBy[infra], infraUse)
	}
	slices.SortFunc(d.Images, func(a, b config.Image) int { return strings.Compare(a.Expected, b.Expected) })
	d.Status = agent.DiscoveryStatus{
		Node: st.node.name, Jobs: len(st.jobs), Images: len(d.Images), Index: st.index, Listed: st.listed,
		Live: st.live, Error: st.err, Problems: slices.Clone(st.problems),
		MaxImages: limit, LeftOut: len(byRef) - len(all), LeftOutImages: leftOut, HoldReadiness: st.rules.holdReadiness,
		Staged: agent.StagedStatus{Version: st.staged.version, Error: st.staged.err, Jobs: stagedReport},
	}
	if st.relay != nil {
		r := *st.relay
		d.Status.Relay = &r
	}
	if st.err != "" {
		t := st.errorSince
		d.Status.ErrorSince = &t
	}
	return d
}

// joined is every job's images, registered then staged.
func joined(maps ...map[string]jobImages) []jobImages {
	var out []jobImages
	for _, m := range maps {
		for _, ji := range m {
			out = append(out, ji)
		}
	}
	return out
}

const infraUse = "nomad infra_image (the pause container of bridge networking)"

// logLeftOut logs, once, that images started being left out over
// max_images, and when none are any more.
func (st *state) logLeftOut(n int, first []string) {
	switch {
	case n > 0 && st.leftOut == 0:
		st.log.Warn("discovery: the jobs that can run here name more images than nomad max_images; the newest jobs' are left out (see /v1/status nomad.left_out_images)",
			"max_images", st.rules.maxImages, "left_out", n, "first_left_out", first[:min(len(first), 3)])
	case n == 0 && st.leftOut > 0:
		st.log.Info("discovery: every image the jobs name is kept again", "max_images", st.rules.maxImages)
	}
	st.leftOut = n
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
