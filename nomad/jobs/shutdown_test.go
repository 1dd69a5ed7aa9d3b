package jobs

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// Nomad 2.0 warns at submit time (nomad job run, nomad job validate) about
// a group whose services nobody gives time to deregister before its tasks
// are signalled (hashicorp/nomad#27782, closing #23326):
//
//	group "prefetch" defines services, but neither the group nor any of its tasks have shutdown_delay set
//	task "x" in group "y" defines services, but has no shutdown_delay set
//
// Without the delay, the catalog still lists an allocation that is already
// stopping: `prefetch status -cluster` and `prefetch wait` would ask an
// agent that has gone, and Prometheus would scrape it. This test applies
// Nomad's rule to both job files, since nomad job validate can't run here.
func TestServicesHaveShutdownDelay(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file, job string
	}{
		{"prefetch.nomad.hcl", "prefetch"},
		{"eventlog.nomad.hcl", "eventlog"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			j := readJob(t, tc.file, map[string]cty.Value{"image": cty.StringVal("x:1")})
			groups := 0
			for _, g := range j.block(j.body, "job", tc.job).Blocks {
				if g.Type != "group" {
					continue
				}
				groups++
				for _, w := range shutdownDelayWarnings(j, g) {
					t.Errorf("%s: Nomad 2.0 would warn: %s", tc.file, w)
				}
			}
			if groups == 0 {
				t.Fatalf("%s: no group", tc.file)
			}
		})
	}
}

// shutdownDelayWarnings returns what Nomad 2.0 warns about group g: services
// at the group level need a shutdown_delay on the group or on one of its
// tasks; a task's own services need the task's. A delay must be a positive
// duration; Nomad's own minimum is none, so any positive value silences it,
// but a delay shorter than a second does not give a catalog time to notice.
func shutdownDelayWarnings(j *jobFile, group *hclsyntax.Block) []string {
	g := group.Body
	delay := func(body *hclsyntax.Body) bool {
		if !has(body, "shutdown_delay") {
			return false
		}
		d, err := time.ParseDuration(value[string](j, body, "shutdown_delay"))
		if err != nil {
			j.t.Errorf("%s: shutdown_delay: %v", body.SrcRange, err)
			return false
		}
		return d >= time.Second
	}
	var warnings []string
	anyTask := false
	for _, task := range g.Blocks {
		if task.Type != "task" {
			continue
		}
		anyTask = anyTask || delay(task.Body)
		if len(blocks(task.Body, "service")) > 0 && !delay(task.Body) {
			warnings = append(warnings, fmt.Sprintf("task %q in group %q defines services, but has no shutdown_delay set", task.Labels[0], group.Labels[0]))
		}
	}
	if len(blocks(g, "service")) > 0 && !delay(g) && !anyTask {
		warnings = append(warnings, fmt.Sprintf("group %q defines services, but neither the group nor any of its tasks have shutdown_delay set", group.Labels[0]))
	}
	return warnings
}
