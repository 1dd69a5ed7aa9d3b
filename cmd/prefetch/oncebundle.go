package main

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"

	"github.com/nomad-prefetch/nomad-prefetch/bundle"
	"github.com/nomad-prefetch/nomad-prefetch/config"
)

// onceImages is what once works on. With -config, the config's images (or
// those named), each with the -bundle file, if given, as its last source.
// With -bundle alone, every image the bundle holds (or those named), served
// from it alone: offline, no registry is asked, and the settings are the
// defaults (the Docker daemon from DOCKER_HOST). When ok is false, once
// returns code.
func onceImages(cfgPath, bundlePath string, names []string, log *slog.Logger, stderr io.Writer) (cfg config.Config, images []config.Image, offline bool, code int, ok bool) {
	src := ""
	if bundlePath != "" {
		abs, err := filepath.Abs(bundlePath)
		if err != nil {
			fmt.Fprintf(stderr, "prefetch once: -bundle %s: %v\n", bundlePath, err)
			return cfg, nil, false, exitUsage, false
		}
		src = config.BundlePrefix + abs
	}
	if cfgPath == "" && src != "" {
		return bundleImages(src, names, log, stderr)
	}
	if cfg, images, ok = configImages("once", cfgPath, names, log, stderr); !ok {
		return cfg, nil, false, exitUsage, false
	}
	if src != "" {
		images = slices.Clone(images)
		for i, img := range images {
			if !slices.Contains(img.Sources, src) {
				images[i].Sources = append(slices.Clone(img.Sources), src)
			}
		}
	}
	return cfg, images, false, exitOK, true
}

// bundleImages is every image the bundle src holds, each with the bundle
// as its one source, under the default settings. A bundle that can't be
// read is a failure (exit 1), said on stderr naming the file.
func bundleImages(src string, names []string, log *slog.Logger, stderr io.Writer) (cfg config.Config, images []config.Image, offline bool, code int, ok bool) {
	path, _ := config.BundlePath(src)
	cfg = config.Default(path)
	m, err := bundle.Read(path)
	if err != nil {
		log.Error("bundle not usable", "file", path, "error", err.Error())
		return cfg, nil, true, exitFailed, false
	}
	for _, e := range m.Images {
		name := e.Name
		if name == "" {
			name = e.Expected
		}
		images = append(images, config.Image{Name: name, Expected: e.Expected, Sources: []string{src}})
	}
	if images, err = selectImages(images, names); err != nil {
		fmt.Fprintf(stderr, "prefetch once: %v\n", err)
		return cfg, nil, true, exitUsage, false
	}
	return cfg, images, true, exitOK, true
}
