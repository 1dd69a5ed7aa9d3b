package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/bundle"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

var _ agent.Bundles = (*bundle.Loader)(nil)

const bundleDoc = `Usage: prefetch bundle -config FILE -o FILE [flags] [NAME...]

Write every image of the config (or only the image blocks named) into one
bundle file, for nodes no registry can serve: an air-gapped site, or a cluster
whose registry path is down and whose upstream is out of reach. Run it on a
connected machine. Each image is first made present here, exactly as
'prefetch once' does; then the Docker Engine's own save of them all is
streamed into FILE (never held in memory), with a manifest naming each
image's expected reference, image ID and registry digest.

Images are saved by image ID, so loading the bundle tags nothing and never
moves a tag already on a node; prefetch tags each image as expected only once
it has checked that the Engine loaded the very image ID the manifest names.
FILE is written beside itself and renamed when complete: it is the whole
bundle or nothing. No bundle is written unless every image is present.

On each node: 'prefetch once -bundle FILE', and "bundle:FILE" among an image's
sources in the agent's config ('docker load -i FILE' reads it too, and tags
nothing).

Progress goes to stderr (image n of m present, bytes written), a summary to
stdout (-json: a JSON document). Exits 0 when the bundle was written, 1 when an
image could not be had or the bundle could not be written, 2 on a usage or
config error.

Example:
  prefetch bundle -config /etc/prefetch/config.hcl -o /media/usb/bootstrap.tar
  prefetch bundle -config config.hcl -o bootstrap.tar registry traefik
`

func runBundle(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("bundle", bundleDoc, stdout, stderr)
	cfgPath := fs.String("config", "", "the config file (required)")
	out := fs.String("o", "", "the bundle file to write (required); replaced only once complete")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	log, names, code, done := parseCommand("bundle", fs, args, stderr)
	if done {
		return code
	}
	if *out == "" {
		fmt.Fprintln(stderr, "prefetch bundle: -o is required (see prefetch bundle -h)")
		return exitUsage
	}
	cfg, images, ok := configImages("bundle", *cfgPath, names, log, stderr)
	if !ok {
		return exitUsage
	}
	clients, ok := connectDocker(ctx, cfg, log)
	if !ok {
		return exitFailed
	}
	defer clients.Engine.Close()

	f := newFetcher(cfg, clients, log)
	results := f.Once(ctx, images, cfg.Concurrency)
	var written *bundle.Written
	if !slices.ContainsFunc(results, func(r agent.Result) bool { return !r.OK() }) {
		w, err := writeBundle(ctx, clients.Engine, *out, cfg, results, log)
		if err != nil {
			log.Error("bundle not written", "file", *out, "error", err.Error())
		} else {
			written = &w
		}
	} else {
		log.Error("bundle not written: an image could not be had", "file", *out)
	}
	if err := printBundle(stdout, *asJSON, results, written); err != nil {
		log.Error("writing the summary", "error", err.Error())
		return exitFailed
	}
	if written == nil {
		return exitFailed
	}
	return exitOK
}

// newFetcher is the per-image step as once and bundle run it.
func newFetcher(cfg config.Config, clients agent.Clients, log *slog.Logger) *agent.Fetcher {
	return &agent.Fetcher{
		Docker: clients.Engine, Remote: clients.Remote, Bundles: bundle.NewLoader(clients.Engine, log),
		PullTimeout: cfg.PullTimeout, StallTimeout: cfg.StallTimeout, Log: log,
	}
}

// writeBundle writes the images results made present into path.
func writeBundle(ctx context.Context, eng *registry.Engine, path string, cfg config.Config, results []agent.Result, log *slog.Logger) (bundle.Written, error) {
	var entries []bundle.Entry
	var size int64
	for _, r := range results {
		im, err := eng.Inspect(ctx, r.Image.Expected)
		if err != nil {
			return bundle.Written{}, err
		}
		entries = append(entries, bundle.EntryFor(r.Image.Name, r.Image.Expected, r.Source, r.Image.Digest, im))
		size += im.Size
	}
	return bundle.Write(ctx, eng, path, entries, bundle.WriteOptions{
		Archive: registry.ArchiveOptions{StallTimeout: cfg.StallTimeout, QuietTimeout: cfg.PullTimeout},
		Log:     log, SizeHint: size,
	})
}

// printBundle prints the images' table and the bundle written, if any.
func printBundle(w io.Writer, asJSON bool, results []agent.Result, written *bundle.Written) error {
	if asJSON {
		ok, images := jsonResults(results)
		doc := struct {
			OK     bool         `json:"ok"`
			Images []jsonResult `json:"images"`
			Bundle *jsonBundle  `json:"bundle"`
		}{OK: ok && written != nil, Images: images}
		if written != nil {
			doc.Bundle = &jsonBundle{Path: written.Path, Bytes: written.Bytes, Images: len(written.Manifest.Images), Seconds: written.Duration.Seconds()}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(doc)
	}
	if err := writeTable(w, results); err != nil {
		return err
	}
	if written == nil {
		_, err := fmt.Fprintln(w, "\nno bundle written")
		return err
	}
	_, err := fmt.Fprintf(w, "\nbundle %s: %d image(s), %s, written in %s\n", written.Path, len(written.Manifest.Images), bundle.FormatBytes(written.Bytes), written.Duration.Round(10e6))
	return err
}

// jsonBundle is the bundle in the -json summary.
type jsonBundle struct {
	Path    string  `json:"path"`
	Bytes   int64   `json:"bytes"`
	Images  int     `json:"images"`
	Seconds float64 `json:"duration_seconds"`
}
