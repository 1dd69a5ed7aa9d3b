// Package flagdocs finds the flags a command's -h lists that the README and
// docs/ never name, for the commands' tests: -h and the docs can't drift
// apart silently.
package flagdocs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var flagLine = regexp.MustCompile(`(?m)^\s+-([a-z][a-z-]*)\b`)

// Flags lists the flags a -h text defines (the flag package's lines
// "  -name ...").
func Flags(help string) []string {
	var out []string
	for _, m := range flagLine.FindAllStringSubmatch(help, -1) {
		out = append(out, m[1])
	}
	return out
}

// Docs returns the README and every page under docs/ of the repository at
// root, as one text.
func Docs(root string) (string, error) {
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, f := range append(files, filepath.Join(root, "README.md")) {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		b.Write(data)
	}
	return b.String(), nil
}

// Named reports whether docs name flag as `-flag` or, in a synopsis,
// [-flag ...].
func Named(docs, flag string) bool {
	return regexp.MustCompile("[`\\[]-" + regexp.QuoteMeta(flag) + "[`\\] =]").MatchString(docs)
}

// Check fails t for each flag the -h text help lists that docs never name,
// and when it lists none; what names the command in the messages
// ("prefetch run").
func Check(t testing.TB, docs, what, help string) {
	t.Helper()
	flags := Flags(help)
	if len(flags) == 0 {
		t.Errorf("%s -h lists no flags:\n%s", what, help)
	}
	for _, f := range flags {
		if !Named(docs, f) {
			t.Errorf("%s -%s: not in the README or docs/", what, f)
		}
	}
}
