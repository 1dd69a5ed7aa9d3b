package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-prefetch/nomad-prefetch/nomad"
	"github.com/nomad-prefetch/nomad-prefetch/stage"
)

// stagedLatency measures a write of the staged set (what prefetch stage
// does) → the first registry request for the staged job's image on an
// agent, against, in the same run and with the same agent, the discovery
// path: a JobRegistered event → the first request.
func stagedLatency(ctx context.Context, e *env, out io.Writer) error {
	o := e.o
	refs, err := e.seed(ctx, "stage", 2*o.samples, 64<<10, 128<<10, false)
	if err != nil {
		return err
	}
	srv, err := e.fakeNomad(100)
	if err != nil {
		return err
	}
	defer srv.Close()
	c, err := nomad.NewClient(&api.Config{Address: srv.URL}, func() (string, error) { return "", nil })
	if err != nil {
		return err
	}
	write := func(ref string) error {
		now := time.Now()
		job := stage.Job{Namespace: "default", ID: "registry", StagedAt: now, Expires: now.Add(time.Hour), Spec: stage.Spec{
			Groups: []stage.Group{{Name: "registry", Tasks: []stage.Task{{Name: "registry", Image: ref}}}},
		}}
		_, _, err := stage.Update(ctx, c, 10*time.Second, func(s stage.Set, _ error) (stage.Set, error) { return s.With(job, now), nil })
		return err
	}
	// The set exists before the agent starts, as it does once a cluster has
	// staged once: the agent's read of it blocks (recorded), and a write
	// wakes it.
	if err := write("none.invalid/never:1"); err != nil {
		return err
	}
	a, _, _, err := e.startAgentWith(ctx, "stage", e.nomadConfig(srv.URL, ""))
	if err != nil {
		return err
	}
	defer a.stop()
	var staged, registered []time.Duration
	for i := range o.samples {
		d, err := e.timeFirstRequest(ctx, refs[2*i], func() {
			if err := write(refs[2*i]); err != nil {
				progress("stage sample %d: %v", i+1, err)
			}
		})
		if err != nil {
			return fmt.Errorf("stage sample %d: %w", i+1, err)
		}
		staged = append(staged, d)
		// Apart, so that neither sample's set is coalesced with the
		// other's (discovery reports at most one set per 100 ms).
		time.Sleep(300 * time.Millisecond)
		d, err = e.timeFirstRequest(ctx, refs[2*i+1], func() { srv.RegisterJob(benchJob("web", []string{refs[2*i+1]}, 1)) })
		if err != nil {
			return fmt.Errorf("discovery sample %d: %w", i+1, err)
		}
		registered = append(registered, d)
		progress("stage sample %d: first request %s after the staged write, %s after a registration", i+1, ms(staged[i]), ms(d))
		time.Sleep(300 * time.Millisecond)
	}

	fmt.Fprintf(out, "\n### Staged set write to first registry request (prefetch stage)\n\n")
	fmt.Fprintf(out, "`prefetch run` with a nomad block following the fake Nomad agent of internal/nomadtest; each sample writes the staged set "+
		"(variable %s, a check-and-set as prefetch stage writes it) with one job whose only docker task names a new image (64 to 128 KiB, only in the registry), "+
		"then registers another job naming another new image; the clock starts just before the write (or the registration) and stops when the first request "+
		"naming the image's repository reaches the proxy in front of the registry. Baseline, same run, same agent: the registration, seen through the Job event stream. "+
		"Percentiles are nearest-rank.\n\n", stage.Path)
	fmt.Fprintf(out, "| | samples | p50 | p95 | max | min |\n| --- | --- | --- | --- | --- | --- |\n")
	fmt.Fprintf(out, "| staged set write (blocking read of the variable) | %d | %s | %s | %s | %s |\n", len(staged), ms(pct(staged, 50)), ms(pct(staged, 95)), ms(pct(staged, 100)), ms(pct(staged, 0)))
	fmt.Fprintf(out, "| baseline: job registration (Job events) | %d | %s | %s | %s | %s |\n", len(registered), ms(pct(registered, 50)), ms(pct(registered, 95)), ms(pct(registered, 100)), ms(pct(registered, 0)))
	fmt.Fprintf(out, "\nGoal: p50 < 1 s: %s (p50 %s, p95 %s).\n", verdict(pct(staged, 50) < time.Second), ms(pct(staged, 50)), ms(pct(staged, 95)))
	return nil
}
