package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/nomad-prefetch/nomad-prefetch/internal/flagdocs"
)

// Every flag of every command is documented: named as `-flag` (or
// [-flag ...] in a synopsis) in the README or docs/, so -h and the docs
// can't drift apart silently.
func TestEveryFlagDocumented(t *testing.T) {
	t.Parallel()
	docs, err := flagdocs.Docs("../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"run", "once", "bundle", "status", "wait", "stage", "validate"} {
		var out, errb bytes.Buffer
		run(context.Background(), []string{cmd, "-h"}, &out, &errb)
		flags := flagdocs.Flags(out.String() + errb.String())
		if len(flags) == 0 {
			t.Errorf("prefetch %s -h lists no flags", cmd)
		}
		for _, f := range flags {
			if !flagdocs.Named(docs, f) {
				t.Errorf("prefetch %s -%s: not in the README or docs/", cmd, f)
			}
		}
	}
}
