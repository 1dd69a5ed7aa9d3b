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
		flagdocs.Check(t, docs, "prefetch "+cmd, out.String()+errb.String())
	}
}
