package main

import (
	"cmp"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
)

// writeStatusTable prints an agent's snapshot for a person; every string
// of the agent's goes through clean or cleanLines.
func writeStatusTable(w io.Writer, s agent.Snapshot, now time.Time) error {
	fmt.Fprintf(w, "config %s, loaded %s ago\n", clean(s.Config, maxField), now.Sub(s.ConfigLoaded).Round(time.Second))
	if s.ConfigError != "" {
		fmt.Fprintf(w, "the file on disk is not in use:\n  %s\n", strings.ReplaceAll(cleanLines(s.ConfigError, maxText), "\n", "\n  "))
	}
	if s.DockerError != "" {
		_, why := s.Ready()
		fmt.Fprintf(w, "NOT READY: %s\n(the states below are the last known)\n", clean(why, maxText))
	}
	if s.Nomad != nil {
		writeDiscovery(w, *s.Nomad, now)
	}
	if s.Foreground != nil {
		writeForeground(w, *s.Foreground, now)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	origin := s.Nomad != nil
	if origin {
		fmt.Fprint(tw, "ORIGIN\t")
	}
	fmt.Fprintln(tw, "IMAGE\tSTATE\tEXPECTED\tFROM\tIMAGE ID\tATTEMPTS\tNEXT RETRY")
	for _, img := range s.Images {
		from := "-"
		if img.ImageID != "" {
			from = "expected"
			if img.Source != "" {
				from = img.Source
			}
		}
		id := "-"
		if img.ImageID != "" {
			id = strings.TrimPrefix(img.ImageID, "sha256:")
			id = id[:min(len(id), 12)]
		}
		next := "-"
		if img.NextRetry != nil {
			next = "in " + img.NextRetry.Sub(now).Round(time.Second).String()
		}
		if origin {
			fmt.Fprintf(tw, "%s\t", clean(img.Origin, maxField))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", clean(img.Name, maxField), clean(img.State, maxField), clean(img.Expected, maxField),
			clean(from, maxField), clean(id, maxField), img.Attempts, next)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, img := range s.Images {
		if len(img.UsedBy) > 1 || (len(img.UsedBy) == 1 && img.UsedBy[0] != img.Name) {
			fmt.Fprintf(w, "\n%s is used by: %s\n", clean(img.Name, maxField), clean(strings.Join(img.UsedBy, ", "), maxText))
		}
	}
	for _, img := range s.Images {
		if img.LastError != "" {
			fmt.Fprintf(w, "\n%s: %s\n", clean(img.Name, maxField), strings.ReplaceAll(cleanLines(img.LastError, maxText), "\n", "\n  "))
		}
	}
	return nil
}

// writeDiscovery says how discovering images from Nomad goes.
func writeDiscovery(w io.Writer, d agent.DiscoveryStatus, now time.Time) {
	switch {
	case !d.Listed:
		fmt.Fprintf(w, "nomad: NOT READY, the jobs were never listed: %s\n", clean(cmp.Or(d.Error, "listing them"), maxText))
	case d.Error != "":
		since := ""
		if d.ErrorSince != nil {
			since = " for " + now.Sub(*d.ErrorSince).Round(time.Second).String()
		}
		fmt.Fprintf(w, "nomad: not followed%s, the last known images kept: %s\n", since, clean(d.Error, maxText))
	default:
		fmt.Fprintf(w, "nomad: following the jobs of node %s: %d job(s) name %d image(s) kept here, index %d\n", clean(d.Node, maxField), d.Jobs, d.Images, d.Index)
	}
	if d.LeftOut > 0 {
		fmt.Fprintf(w, "  %d image(s) left out, over max_images (%d): the newest jobs' (prefetch status -json lists the first %d)\n", d.LeftOut, d.MaxImages, len(d.LeftOutImages))
		if len(d.LeftOutImages) > 0 {
			fmt.Fprintf(w, "  the next in line: %s\n", clean(d.LeftOutImages[0], maxField))
		}
	}
	if r := d.Relay; r != nil {
		switch {
		case r.Self:
			fmt.Fprintf(w, "  relay: this agent is the relay (%s): it follows Nomad for the others\n", clean(r.Holder, maxField))
		case r.Source == agent.SourceRelay:
			fmt.Fprintf(w, "  relay: Job events from the relay at %s\n", clean(r.Holder, maxField))
		case r.Source == agent.SourceNomad:
			fmt.Fprintf(w, "  relay: no relay answers (the lock names %s): Job events from Nomad directly\n", clean(cmp.Or(r.Holder, "none"), maxField))
		default:
			fmt.Fprintln(w, "  relay: no relay known yet")
		}
	}
	writeStaged(w, d.Staged)
	const show = 5 // the newest
	problems := d.Problems
	if n := len(problems) - show; n > 0 {
		fmt.Fprintf(w, "  %d older problem(s): prefetch status -json lists them\n", n)
		problems = problems[n:]
	}
	for _, p := range problems {
		fmt.Fprintf(w, "  %s\n", clean(p, maxText))
	}
}

// writeStaged lists the staged jobs (prefetch stage) this agent read.
func writeStaged(w io.Writer, st agent.StagedStatus) {
	if st.Error != "" {
		fmt.Fprintf(w, "  staged set (version %d): %s\n", st.Version, clean(st.Error, maxText))
	}
	for _, j := range st.Jobs {
		line := fmt.Sprintf("  staged job %s (staged set version %d): ", clean(j.Job, maxField), st.Version)
		switch {
		case j.State != agent.StagedActive:
			line += j.State + ", its images no longer kept as staged"
		case !j.Fits && len(j.Blocked) == 0:
			line += "no group can run here"
		default:
			line += fmt.Sprintf("%d image(s) kept here until %s", len(j.Images), j.Expires.UTC().Format(time.RFC3339))
		}
		fmt.Fprintln(w, line)
		for _, b := range j.Blocked[:min(len(j.Blocked), 3)] {
			fmt.Fprintf(w, "    %s\n", clean(b, maxText))
		}
	}
}

// writeForeground says whether the agent yields to Nomad's own pulls.
func writeForeground(w io.Writer, f agent.ForegroundStatus, now time.Time) {
	switch {
	case f.Yield == "off":
		fmt.Fprintf(w, "foreground: yield off; background pulls at most %d at once\n", f.BackgroundPulls)
	case f.Error != "":
		fmt.Fprintf(w, "foreground: this node's allocations can't be read, not yielding: %s\n", f.Error)
	case f.Yielding:
		since := ""
		if f.YieldingSince != nil {
			since = " for " + now.Sub(*f.YieldingSince).Round(time.Second).String()
		}
		fmt.Fprintf(w, "foreground: YIELDING%s (%s), background pulls held back: %s\n", since, f.Yield, f.Why)
	default:
		fmt.Fprintf(w, "foreground: no starting task waits for an image; background pulls at most %d at once (yield %s, %d episode(s), %d pull(s) cancelled)\n", f.BackgroundPulls, f.Yield, f.Episodes, f.Cancelled)
	}
	if len(f.GaveUp) > 0 {
		fmt.Fprintf(w, "  no longer yielded to (waited for too long): %s\n", strings.Join(f.GaveUp, ", "))
	}
}
