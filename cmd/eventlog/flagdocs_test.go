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
	flagdocs.Check(t, docs, "eventlog", out.String()+errb.String())
}
