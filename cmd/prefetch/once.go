package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

const onceDoc = `Usage: prefetch once -config FILE [flags] [NAME...]
       prefetch once -bundle FILE [flags] [NAME...]

Pull every image in the config once, as a node being bootstrapped by hand
needs: for each image, pull the expected reference; if that fails, pull each
source in turn and tag the first that succeeds as the expected reference. With
NAMEs, only the image blocks with those labels. Flags may come before or after
the NAMEs; -- ends the flags (for a NAME that starts with -).

-bundle FILE serves images from a bundle written by 'prefetch bundle'. With
-config, it is tried after each image's own sources. Without -config, every
image the bundle holds is made present from it alone, asking no registry at
all (an air-gapped node); the Docker daemon is DOCKER_HOST's. The bundle is
loaded into Docker once, each image tagged as expected only after checking
that the Engine loaded the image ID the bundle's manifest names for it; a
truncated or corrupt bundle is an error naming the file, and nothing of it is
tagged.

Prints a summary table on stdout (-json: a JSON document) and logs to stderr.
Exits 0 when every image is present (pulled, up to date, retagged from a
source, or present but not refreshed), 1 when any image could not be had, 2 on
a usage or config error.

Example:
  prefetch once -config /etc/prefetch/config.hcl
  prefetch once -bundle /bootstrap/bootstrap.tar
  DOCKER_HOST=unix:///run/docker.sock prefetch once -config config.hcl traefik -json
`

func runOnce(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("once", onceDoc, stdout, stderr)
	cfgPath := fs.String("config", "", "the config file (required unless -bundle is given)")
	bundlePath := fs.String("bundle", "", "a bundle file (prefetch bundle): with -config, tried after each image's sources; alone, every image it holds, asking no registry")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	log, names, code, done := parseCommand("once", fs, args, stderr)
	if done {
		return code
	}
	cfg, images, offline, code, ok := onceImages(*cfgPath, *bundlePath, names, log, stderr)
	if !ok {
		return code
	}

	clients, ok := connectDocker(ctx, cfg, log)
	if !ok {
		return exitFailed
	}
	defer clients.Engine.Close()

	f := newFetcher(cfg, clients, log)
	f.Offline = offline
	results := f.Once(ctx, images, cfg.Concurrency)
	var err error
	if *asJSON {
		err = writeJSON(stdout, results)
	} else {
		err = writeTable(stdout, results)
	}
	if err != nil {
		log.Error("writing the summary", "error", err.Error())
		return exitFailed
	}
	if slices.ContainsFunc(results, func(r agent.Result) bool { return !r.OK() }) {
		return exitFailed
	}
	return exitOK
}

// connectDocker makes the clients cfg names and checks that the Docker
// daemon answers; when it can't, it logs why and ok is false (exit 1).
func connectDocker(ctx context.Context, cfg config.Config, log *slog.Logger) (clients agent.Clients, ok bool) {
	clients, err := agent.NewClients(cfg, dockerCallTimeout)
	if err != nil {
		log.Error(err.Error())
		return clients, false
	}
	if err := clients.Engine.Ping(ctx); err != nil {
		log.Error(err.Error())
		clients.Engine.Close()
		return clients, false
	}
	return clients, true
}

// configImages loads the -config file of command cmd, logs its warnings and
// returns the images named (all when names is empty); ok is false after a
// usage error, said on stderr.
func configImages(cmd, path string, names []string, log *slog.Logger, stderr io.Writer) (cfg config.Config, images []config.Image, ok bool) {
	if cfg, ok = loadConfig(cmd, path, stderr); !ok {
		return cfg, nil, false
	}
	for _, w := range cfg.Warnings {
		log.Warn("config: "+w.Msg, "at", w.Pos.String())
	}
	images, err := selectImages(cfg.Images, names)
	if err != nil {
		fmt.Fprintf(stderr, "prefetch %s: %v\n", cmd, err)
		return cfg, nil, false
	}
	return cfg, images, true
}

// dockerCallTimeout bounds every Docker Engine call but a pull's stream; a
// variable so that tests of a hung daemon need not wait the default.
var dockerCallTimeout = registry.DefaultCallTimeout

// loadConfig loads the -config file of command cmd. When the file can't be
// used it prints why (every problem with file:line:col) and ok is false: a
// usage error. Warnings are the caller's to report.
func loadConfig(cmd, path string, stderr io.Writer) (cfg config.Config, ok bool) {
	if path == "" {
		fmt.Fprintf(stderr, "prefetch %s: -config is required (see prefetch %s -h)\n", cmd, cmd)
		return cfg, false
	}
	cfg, err := config.Load(path)
	if err != nil {
		printConfigError(stderr, err)
		return cfg, false
	}
	return cfg, true
}

// printConfigError prints each problem of a config error on a line of its
// own, the first config.MaxProblems of them, then how many more there are.
// validate, once and run all report a config that can't be used through it.
func printConfigError(w io.Writer, err error) {
	var errs config.Errors
	if !errors.As(err, &errs) {
		fmt.Fprintf(w, "prefetch: %v\n", err)
		return
	}
	shown := errs[:min(len(errs), config.MaxProblems)]
	for _, p := range shown {
		fmt.Fprintf(w, "%s: error: %s\n", p.Pos, p.Msg)
	}
	if n := len(errs) - len(shown); n > 0 {
		fmt.Fprintf(w, "and %d more\n", n)
	}
	fmt.Fprintf(w, "prefetch: %d problem(s) in %s\n", len(errs), errs[0].Pos.File)
}

// selectImages returns the images named, in config order; all of them when
// names is empty.
func selectImages(images []config.Image, names []string) ([]config.Image, error) {
	if len(names) == 0 {
		return images, nil
	}
	var known []string
	for _, img := range images {
		known = append(known, img.Name)
	}
	for _, n := range names {
		if !slices.Contains(known, n) {
			return nil, fmt.Errorf("no image %q in the config (it has: %s)", n, strings.Join(known, ", "))
		}
	}
	return slices.DeleteFunc(slices.Clone(images), func(img config.Image) bool { return !slices.Contains(names, img.Name) }), nil
}

func writeTable(w io.Writer, results []agent.Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tEXPECTED\tRESULT\tDURATION")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Image.Name, r.Image.Expected, r.Summary(), r.Duration.Round(10*time.Millisecond))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range results {
		if r.Err == nil {
			continue
		}
		fmt.Fprintf(w, "\n%s: %s:\n", r.Image.Name, r.Outcome)
		for _, line := range strings.Split(r.Err.Error(), "\n") {
			fmt.Fprintf(w, "  %s\n", line)
		}
	}
	return nil
}

// jsonResult is one image in the -json summary.
type jsonResult struct {
	Name     string  `json:"name"`
	Expected string  `json:"expected"`
	Result   string  `json:"result"`
	Summary  string  `json:"summary"`
	Source   string  `json:"source,omitempty"`
	ImageID  string  `json:"image_id,omitempty"`
	Seconds  float64 `json:"duration_seconds"`
	Error    string  `json:"error,omitempty"`
}

func writeJSON(w io.Writer, results []agent.Result) error {
	doc := struct {
		OK     bool         `json:"ok"`
		Images []jsonResult `json:"images"`
	}{}
	doc.OK, doc.Images = jsonResults(results)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

// jsonResults is the images of the -json summary, and whether every one is
// present.
func jsonResults(results []agent.Result) (ok bool, images []jsonResult) {
	ok, images = true, []jsonResult{}
	for _, r := range results {
		jr := jsonResult{
			Name:     r.Image.Name,
			Expected: r.Image.Expected,
			Result:   string(r.Outcome),
			Summary:  r.Summary(),
			Source:   r.Source,
			ImageID:  r.ImageID,
			Seconds:  r.Duration.Seconds(),
		}
		if r.Err != nil {
			jr.Error = r.Err.Error()
		}
		ok = ok && r.OK()
		images = append(images, jr)
	}
	return ok, images
}
