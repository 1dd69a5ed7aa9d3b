package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/nomad-prefetch/nomad-prefetch/internal/flagdocs"
)

// Every flag of eventlog is documented: named as `-flag` (or [-flag ...] in
// a synopsis) in the README or docs/, so -h and the docs can't drift apart
// silently.
func TestEveryFlagDocumented(t *testing.T) {
	t.Parallel()
	docs, err := flagdocs.Docs("../..")
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	_ = run(context.Background(), []string{"-h"}, &out, &errb)
	flags := flagdocs.Flags(out.String() + errb.String())
	if len(flags) == 0 {
		t.Fatalf("eventlog -h lists no flags:\n%s", out.String())
	}
	for _, f := range flags {
		if !flagdocs.Named(docs, f) {
			t.Errorf("eventlog -%s: not in the README or docs/", f)
		}
	}
}
