package main

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// What an agent's answer (or a catalog's registration) puts on the
// terminal is cut at these lengths, in runes, and stripped of what a
// terminal would act on: an agent is a process on some node, and what it
// says is data, never escape sequences, a cleared screen or columns
// shifted by a tab.
const (
	maxField = 200  // a name, a reference, a node, an address, a state
	maxText  = 1000 // an error or a reason
	maxLines = 20   // of a multi-line error, kept as lines
)

// clean is s on one line: every control character (a newline and a tab
// too), every Unicode format character (bidirectional overrides,
// zero-width ones) and every invalid byte written as an escape (\x1b,
// \u202e), and what is longer than max runes cut, saying so.
func clean(s string, max int) string {
	return sanitize(s, max, false)
}

// cleanLines is clean keeping newlines, maxLines lines at most.
func cleanLines(s string, max int) string {
	lines := strings.Split(s, "\n")
	more := ""
	if len(lines) > maxLines {
		more = fmt.Sprintf("\n(%d more lines cut)", len(lines)-maxLines)
		lines = lines[:maxLines]
	}
	return sanitize(strings.Join(lines, "\n"), max, true) + more
}

func sanitize(s string, max int, keepNewlines bool) string {
	var b strings.Builder
	n := 0
	for i := 0; i < len(s); {
		if n == max {
			fmt.Fprintf(&b, "...(%d more bytes cut)", len(s)-i)
			break
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n' && keepNewlines:
			b.WriteByte('\n')
		case r < 0x80 && unicode.IsControl(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029':
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
		i += size
		n++
	}
	return b.String()
}
