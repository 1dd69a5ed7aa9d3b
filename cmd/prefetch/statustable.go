package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
)

// writeStatusTable prints an agent's snapshot for a person.
func writeStatusTable(w io.Writer, s agent.Snapshot, now time.Time) error {
	fmt.Fprintf(w, "config %s, loaded %s ago\n", s.Config, now.Sub(s.ConfigLoaded).Round(time.Second))
	if s.ConfigError != "" {
		fmt.Fprintf(w, "the file on disk is not in use:\n  %s\n", strings.ReplaceAll(s.ConfigError, "\n", "\n  "))
	}
	if s.DockerError != "" {
		_, why := s.Ready()
		fmt.Fprintf(w, "NOT READY: %s\n(the states below are the last known)\n", why)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", img.Name, img.State, img.Expected, from, id, img.Attempts, next)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, img := range s.Images {
		if img.LastError != "" {
			fmt.Fprintf(w, "\n%s: %s\n", img.Name, strings.ReplaceAll(img.LastError, "\n", "\n  "))
		}
	}
	return nil
}
