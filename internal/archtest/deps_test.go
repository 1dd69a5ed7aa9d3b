// Package archtest checks the dependency rules the packages' docs state:
// which of the project's packages each may import, that the two programs
// share only what they say, and that no production package imports cmd or
// a test helper. The rules are read from go list, so a new import that
// breaks one fails here rather than in a review.
package archtest

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

const module = "github.com/nomad-prefetch/nomad-prefetch/"

type pkg struct {
	ImportPath string
	Imports    []string // direct, production code only
	Deps       []string // transitive
}

// list returns the module's packages as go list sees them, by path
// relative to the module.
func list(t *testing.T) map[string]pkg {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "list", "-json", "../../...")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list: %v\n%s", err, errb.String())
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(&out)
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs[strings.TrimPrefix(p.ImportPath, module)] = p
	}
	return pkgs
}

// ours returns the project's packages among paths, relative to the module.
func ours(paths []string) []string {
	var out []string
	for _, p := range paths {
		if rel, ok := strings.CutPrefix(p, module); ok {
			out = append(out, rel)
		}
	}
	return out
}

func TestDependencyRules(t *testing.T) {
	pkgs := list(t)
	// The project's packages each may import directly (package docs).
	only := map[string][]string{
		"config":   {},
		"watch":    {},
		"lockfile": {},
		"registry": {},
		"backoff":  {},
		"outage":   {},
		"nomad":    {"backoff", "outage"},
		"bundle":   {"registry"},
		"stage":    {"nomad"},
		"relay":    {"nomad", "halock"},
		"identity": {"nomad"},
		"halock":   {"nomad", "backoff"},
		"agent":    {"backoff", "config", "outage", "registry"},
	}
	for name, allowed := range only {
		p, ok := pkgs[name]
		if !ok {
			t.Errorf("package %s: not found", name)
			continue
		}
		for _, imp := range ours(p.Imports) {
			if !slices.Contains(allowed, imp) {
				t.Errorf("%s imports %s; its doc allows only %v", name, imp, allowed)
			}
		}
	}
	// What must not be reached at all, directly or not.
	never := map[string][]string{
		"eventlog": {"agent", "registry", "status", "config", "watch", "discovery", "cluster", "daemon"},
		"nomad":    {"eventlog", "agent", "registry", "status"},
		"relay":    {"agent", "discovery", "daemon"},
		"identity": {"agent", "discovery", "daemon", "cmd/prefetch", "cmd/eventlog"},
		"halock":   {"eventlog", "agent", "discovery", "cmd/prefetch", "cmd/eventlog"},
	}
	for name, banned := range never {
		for _, dep := range ours(pkgs[name].Deps) {
			if slices.Contains(banned, dep) {
				t.Errorf("%s depends on %s, which its doc rules out", name, dep)
			}
		}
		if slices.Contains(pkgs[name].Deps, "flag") && name == "eventlog" {
			t.Errorf("eventlog depends on the flag package: flags are cmd/eventlog's")
		}
	}
	// Dependencies point one way: nothing imports a main, and no production
	// package imports a test helper.
	for name, p := range pkgs {
		for _, imp := range ours(p.Imports) {
			if strings.HasPrefix(imp, "cmd/") {
				t.Errorf("%s imports %s: cmd is on top", name, imp)
			}
			helper := strings.HasPrefix(imp, "internal/") && !strings.HasPrefix(name, "internal/") && !strings.HasPrefix(name, "bench/")
			if helper {
				t.Errorf("%s imports the test helper %s", name, imp)
			}
		}
	}
}
