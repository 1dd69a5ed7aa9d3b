package discovery

import (
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
	"github.com/nomad-prefetch/nomad-prefetch/stage"
)

// A group's host volumes decide where it can run as Nomad's
// HostVolumeChecker decides it: the source named, read-write only on a
// volume that is not read-only, per_alloc's source[i] for some i below the
// count (every per_alloc volume with the same i); CSI volumes don't count.
func TestVolumesFit(t *testing.T) {
	t.Parallel()
	n := node{volumes: map[string]bool{"data": false, "certs": true, "shard[1]": false, "log[1]": false, "log[2]": false, "shard[07]": false}}
	host := func(source string, ro, perAlloc bool) *api.VolumeRequest {
		return &api.VolumeRequest{Type: "host", Source: source, ReadOnly: ro, PerAlloc: perAlloc}
	}
	for _, tc := range []struct {
		name  string
		count int
		vols  []*api.VolumeRequest
		want  bool
	}{
		{"none", 1, nil, true},
		{"read-write on a read-write volume", 1, []*api.VolumeRequest{host("data", false, false)}, true},
		{"read-only on a read-write volume", 1, []*api.VolumeRequest{host("data", true, false)}, true},
		{"read-only on a read-only volume", 1, []*api.VolumeRequest{host("certs", true, false)}, true},
		{"read-write on a read-only volume", 1, []*api.VolumeRequest{host("certs", false, false)}, false},
		{"a volume the node lacks", 1, []*api.VolumeRequest{host("other", true, false)}, false},
		{"one of two lacking", 1, []*api.VolumeRequest{host("data", false, false), host("other", false, false)}, false},
		{"csi", 1, []*api.VolumeRequest{{Type: "csi", Source: "ebs"}}, true},
		{"per_alloc, shard[1] within the count", 2, []*api.VolumeRequest{host("shard", false, true)}, true},
		{"per_alloc, shard[1] past the count", 1, []*api.VolumeRequest{host("shard", false, true)}, false},
		{"per_alloc, shard[7] spelt shard[07]", 10, []*api.VolumeRequest{host("shard", false, true)}, true}, // shard[1] fits
		{"two per_alloc with one index in common", 3, []*api.VolumeRequest{host("shard", false, true), host("log", false, true)}, true},
		{"two per_alloc with none in common", 3, []*api.VolumeRequest{host("log", false, true), host("data", false, true)}, false},
		{"per_alloc and a shared one", 2, []*api.VolumeRequest{host("shard", false, true), host("certs", false, false)}, false},
	} {
		g := &api.TaskGroup{Count: &tc.count, Volumes: map[string]*api.VolumeRequest{}}
		for i, v := range tc.vols {
			g.Volumes[string(rune('a'+i))] = v
		}
		if got := n.volumesFit(g); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
	if (node{volumes: map[string]bool{"shard[07]": false}}).volumesFit(&api.TaskGroup{Count: new(10), Volumes: map[string]*api.VolumeRequest{"s": host("shard", false, true)}}) {
		t.Error("shard[07] taken for allocation 7 (Nomad names it shard[7])")
	}
}

// newNode keeps the node record's host volumes, as api.Node decodes them.
// The recordings show "HostVolumes": {} only; a non-empty one's shape is
// github.com/hashicorp/nomad/api's HostVolumeInfo (an unrecorded
// assumption).
func TestNewNodeHostVolumes(t *testing.T) {
	t.Parallel()
	if n := fixtureNode(t); len(n.volumes) != 0 {
		t.Errorf("the recorded node: volumes %v", n.volumes)
	}
	n := newNode(&api.Node{HostVolumes: map[string]*api.HostVolumeInfo{"data": {Path: "/srv/data"}, "certs": {Path: "/etc/certs", ReadOnly: true}, "nil": nil}})
	if len(n.volumes) != 2 || n.volumes["data"] || !n.volumes["certs"] {
		t.Errorf("volumes %v", n.volumes)
	}
}

// withHostVolumes is the recorded node with another ID and name, and host
// volumes vols (name: read-only) in api.HostVolumeInfo's shape.
func withHostVolumes(t *testing.T, id string, vols map[string]bool) map[string]any {
	t.Helper()
	var n map[string]any
	fixture(t, "node.json", &n)
	n["ID"], n["Name"] = id, id
	hv := map[string]any{}
	for name, ro := range vols {
		hv[name] = map[string]any{"Path": "/srv/" + name, "ReadOnly": ro, "ID": ""}
	}
	n["HostVolumes"] = hv
	return n
}

// A registered group that mounts host volume "data" read-write is fetched
// only on the node that has it read-write, and a staged one fits only there
// (so a stage waits for that node's agent alone); a per_alloc group on the
// node that has data[1] with count 2.
func TestHostVolumesPlacement(t *testing.T) {
	t.Parallel()
	srv := fakeNomad(t, nomadtest.Options{})
	srv.RegisterJob(webJob(t, "web", "reg:5000/web:1")) // no volumes: every node
	srv.AddNode(withHostVolumes(t, "with-data", map[string]bool{"data": false, "shard[1]": false}))
	srv.AddNode(withHostVolumes(t, "data-read-only", map[string]bool{"data": true}))
	job := webJob(t, "db", "reg:5000/db:1")
	front := job["TaskGroups"].([]any)[0].(map[string]any)
	front["Volumes"] = map[string]any{"data": map[string]any{"Name": "data", "Type": "host", "Source": "data", "ReadOnly": false, "PerAlloc": false, "AccessMode": "", "AttachmentMode": "", "MountOptions": nil, "Sticky": false}}
	srv.RegisterJob(job)
	sharded := webJob(t, "sharded", "reg:5000/shard:1")
	group := sharded["TaskGroups"].([]any)[0].(map[string]any)
	group["Count"] = 2
	group["Volumes"] = map[string]any{"s": map[string]any{"Name": "s", "Type": "host", "Source": "shard", "ReadOnly": false, "PerAlloc": true}}
	srv.RegisterJob(sharded)
	staged := stage.Spec{Groups: []stage.Group{{Name: "g", Constraints: []stage.Constraint{stage.HostVolumeConstraint(&api.VolumeRequest{Type: "host", Source: "data"}, 1)}, Tasks: []stage.Task{{Name: "t", Image: "reg:5000/db:2"}}}}}
	now := time.Now()
	writeStaged(t, srv, func(s stage.Set) stage.Set {
		return s.With(stage.Job{Namespace: "default", ID: "db", Base: srv.JobModifyIndex("default", "db"), StagedAt: now, Expires: now.Add(time.Hour), Spec: staged}, now)
	})

	with := runDiscoverer(t, config.Nomad{Address: srv.URL, NodeID: "with-data"})
	readOnly := runDiscoverer(t, config.Nomad{Address: srv.URL, NodeID: "data-read-only"})
	without := runDiscoverer(t, config.Nomad{Address: srv.URL}) // the recorded node: "HostVolumes": {}
	for _, s := range []*sets{with, readOnly, without} {
		eventually(t, "the jobs listed and the staged set read", func() bool {
			_, ok := stagedJob(s.last(), "default/db")
			return ok && slices.Contains(s.refs(), "reg:5000/web:1")
		})
	}
	for name, tc := range map[string]struct {
		s    *sets
		want []string
		fits bool
	}{
		"with-data":      {with, []string{"reg:5000/db:1", "reg:5000/db:2", "reg:5000/shard:1"}, true},
		"data-read-only": {readOnly, nil, false},
		"without":        {without, nil, false},
	} {
		last := tc.s.last()
		var got []string
		for _, ref := range []string{"reg:5000/db:1", "reg:5000/db:2", "reg:5000/shard:1"} {
			if slices.Contains(tc.s.refs(), ref) {
				got = append(got, ref)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: images %q, want %q", name, got, tc.want)
		}
		j, _ := stagedJob(last, "default/db")
		if j.State != agent.StagedActive || j.Fits != tc.fits || len(j.Blocked) != 0 {
			t.Errorf("%s: staged %+v, want fits %v and nothing blocked", name, j, tc.fits)
		}
	}
}
