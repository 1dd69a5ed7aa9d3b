package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docsText is the README and every page under docs/.
func docsText(t *testing.T) string {
	t.Helper()
	files, _ := filepath.Glob("../../docs/*.md")
	var b strings.Builder
	for _, f := range append(files, "../../README.md") {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	return b.String()
}

// flagsOf lists the flags a -h text defines (the flag package's lines
// "  -name ...").
func flagsOf(help string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z][a-z-]*)\b`).FindAllStringSubmatch(help, -1) {
		out = append(out, m[1])
	}
	return out
}

// Every flag of every command is documented: named as `-flag` (or
// [-flag ...] in a synopsis) in the README or docs/, so -h and the docs
// can't drift apart silently.
func TestEveryFlagDocumented(t *testing.T) {
	t.Parallel()
	docs := docsText(t)
	for _, cmd := range []string{"run", "once", "bundle", "status", "wait", "validate"} {
		var out, errb bytes.Buffer
		run(context.Background(), []string{cmd, "-h"}, &out, &errb)
		flags := flagsOf(out.String() + errb.String())
		if len(flags) == 0 {
			t.Errorf("prefetch %s -h lists no flags", cmd)
		}
		for _, f := range flags {
			if !regexp.MustCompile("[`\\[]-" + regexp.QuoteMeta(f) + "[`\\] =]").MatchString(docs) {
				t.Errorf("prefetch %s -%s: not in the README or docs/", cmd, f)
			}
		}
	}
}
