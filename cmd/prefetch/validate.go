package main

import (
	"fmt"
	"io"
	"slices"

	"github.com/nomad-prefetch/nomad-prefetch/config"
)

const validateDoc = `Usage: prefetch validate -config FILE

Check a config file without touching Docker: print every problem, each with
file:line:col, errors and warnings alike (the first 20 of each, then how many
more), then a one-line verdict. Each auth block's password_file or
password_env is read as a pull would read it, here: one that can't be had is
a warning, and so is a bundle: source whose file can't be read. Exits 0 when the file is usable (warnings allowed), 2 when it is
not.

Example:
  prefetch validate -config /etc/prefetch/config.hcl
`

func runValidate(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("validate", validateDoc, stdout, stderr)
	cfgPath := fs.String("config", "", "the config file (required)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if *cfgPath == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "prefetch validate: want -config FILE and nothing else (see prefetch validate -h)")
		return exitUsage
	}
	cfg, err := config.Load(*cfgPath)
	for _, w := range slices.Concat(cfg.Warnings, cfg.CheckPasswords(), cfg.CheckBundles()) {
		fmt.Fprintf(stdout, "%s: warning: %s\n", w.Pos, w.Msg)
	}
	if err != nil {
		printConfigError(stdout, err)
		return exitUsage
	}
	fmt.Fprintf(stdout, "%s: ok: %d image(s), %d auth block(s)\n", *cfgPath, len(cfg.Images), len(cfg.Auths))
	return exitOK
}
