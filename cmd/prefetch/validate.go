package main

import (
	"fmt"
	"io"

	"github.com/nomad-prefetch/nomad-prefetch/config"
)

const validateDoc = `Usage: prefetch validate -config FILE

Check a config file without touching Docker: print every problem, each with
file:line:col, errors and warnings alike, then a one-line verdict. Exits 0
when the file is usable (warnings allowed), 2 when it is not.

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
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stdout, "%s: warning: %s\n", w.Pos, w.Msg)
	}
	if err != nil {
		printConfigError(stdout, err)
		return exitUsage
	}
	fmt.Fprintf(stdout, "%s: ok: %d image(s), %d auth block(s)\n", *cfgPath, len(cfg.Images), len(cfg.Auths))
	return exitOK
}
