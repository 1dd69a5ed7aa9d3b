package stage

import (
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/api"
)

// A group's host volumes travel as constraints an older agent decodes (its
// Decode refuses unknown fields, not unknown operands) and come back as the
// group's Volumes; CSI volumes are not kept.
func TestReduceCarriesHostVolumes(t *testing.T) {
	job := parsed(t)
	count := 3
	g := job.TaskGroups[0]
	g.Count = &count
	g.Volumes = map[string]*api.VolumeRequest{
		"data":  {Name: "data", Type: "host", Source: "data"},
		"certs": {Name: "certs", Type: "host", Source: "certs", ReadOnly: true},
		"shard": {Name: "shard", Type: "host", Source: "shard", PerAlloc: true},
		"csi":   {Name: "csi", Type: "csi", Source: "ebs"},
	}
	s, err := Reduce(job)
	if err != nil {
		t.Fatal(err)
	}
	want := []Constraint{
		{"${node.class}", "=", "edge"},
		{"certs", HostVolumeOperand, "read_only"},
		{"data", HostVolumeOperand, "read_write"},
		{"shard", HostVolumeOperand, "read_write,per_alloc=3"},
	}
	if got := s.Groups[0].Constraints; !reflect.DeepEqual(got, want) {
		t.Fatalf("constraints: got %+v, want %+v", got, want)
	}
	item, err := Set{Jobs: []Job{{Namespace: "default", ID: "rec-f", Spec: s}}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(item)
	if err != nil {
		t.Fatal(err)
	}
	tg := back.Jobs[0].Spec.APIJob("default", "rec-f").TaskGroups[0]
	if len(tg.Constraints) != 1 || tg.Constraints[0].RTarget != "edge" {
		t.Errorf("api constraints %+v", tg.Constraints)
	}
	got := map[string]api.VolumeRequest{}
	for _, v := range tg.Volumes {
		got[v.Source] = *v
	}
	wantVols := map[string]api.VolumeRequest{
		"certs": {Name: "certs", Type: "host", Source: "certs", ReadOnly: true},
		"data":  {Name: "data", Type: "host", Source: "data"},
		"shard": {Name: "shard", Type: "host", Source: "shard", PerAlloc: true},
	}
	if !reflect.DeepEqual(got, wantVols) || tg.Count == nil || *tg.Count != 3 {
		t.Errorf("api volumes %+v, count %v", got, tg.Count)
	}
}

// A malformed host volume constraint (a writer other than prefetch stage)
// stays a constraint: an unknown operand, undecided.
func TestAPIJobKeepsAMalformedHostVolumeConstraint(t *testing.T) {
	for _, r := range []string{"", "rw", "read_write,per_alloc=x", "read_write,per_alloc=-1", "read_write,per_alloc=03"} {
		s := Spec{Groups: []Group{{Name: "g", Constraints: []Constraint{{"data", HostVolumeOperand, r}}, Tasks: []Task{{Name: "t", Image: "a:1"}}}}}
		tg := s.APIJob("default", "j").TaskGroups[0]
		if len(tg.Volumes) != 0 || len(tg.Constraints) != 1 {
			t.Errorf("%q: volumes %+v, constraints %+v", r, tg.Volumes, tg.Constraints)
		}
	}
}

func TestReduceRefusesTheHostVolumeOperand(t *testing.T) {
	job := parsed(t)
	job.TaskGroups[0].Tasks[0].Constraints = []*api.Constraint{{LTarget: "data", Operand: HostVolumeOperand, RTarget: "read_write"}}
	if _, err := Reduce(job); err == nil || !strings.Contains(err.Error(), `operator "host_volume", which is not Nomad's`) {
		t.Fatalf("err = %v", err)
	}
}
