package main

import (
	"strings"
	"testing"
)

func TestClean(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"web", "web"},
		{"caf\u00e9 \u65e5\u672c", "caf\u00e9 \u65e5\u672c"},
		{"\x1b[2J\x1b]0;pwned\x07", `\x1b[2J\x1b]0;pwned\x07`},
		{"a\tb\nc\rd", `a\x09b\x0ac\x0dd`},
		{"\u009b31m", `\u009b31m`},             // C1 CSI
		{"abc\u202edcba", `abc\u202edcba`},     // right-to-left override
		{"zero\u200bwidth", `zero\u200bwidth`}, // zero-width space
		{"\x7f", `\x7f`},
		{"bad\xffbyte", `bad\xffbyte`},
		{"line\u2028sep", `line\u2028sep`},
	} {
		if got := clean(tc.in, maxField); got != tc.want {
			t.Errorf("clean(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	long := strings.Repeat("\u00e9", 300)
	got := clean(long, maxField)
	if !strings.HasPrefix(got, strings.Repeat("\u00e9", maxField)+"...(") || !strings.Contains(got, "200 more bytes cut") {
		t.Errorf("clean of 300 runes: %q, want %d kept and the rest said cut", got, maxField)
	}
	lines := strings.Repeat("x\x1b\n", 30)
	got = cleanLines(lines, maxText)
	if strings.Count(got, "\n") != maxLines || strings.Contains(got, "\x1b") || !strings.HasSuffix(got, "(11 more lines cut)") {
		t.Errorf("cleanLines of 31 lines: %q, want %d lines, escaped, the rest said cut", got, maxLines)
	}
}
