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

// Every flag of eventlog is documented: named as `-flag` (or [-flag ...] in
// a synopsis) in the README or docs/, so -h and the docs can't drift apart
// silently.
func TestEveryFlagDocumented(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob("../../docs/*.md")
	var docs strings.Builder
	for _, f := range append(files, "../../README.md") {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs.Write(data)
	}
	var out, errb bytes.Buffer
	_ = run(context.Background(), []string{"-h"}, &out, &errb)
	flags := regexp.MustCompile(`(?m)^\s+-([a-z][a-z-]*)\b`).FindAllStringSubmatch(out.String()+errb.String(), -1)
	if len(flags) == 0 {
		t.Fatalf("eventlog -h lists no flags:\n%s", out.String())
	}
	for _, m := range flags {
		if !regexp.MustCompile("[`\\[]-" + regexp.QuoteMeta(m[1]) + "[`\\] =]").MatchString(docs.String()) {
			t.Errorf("eventlog -%s: not in the README or docs/", m[1])
		}
	}
}
