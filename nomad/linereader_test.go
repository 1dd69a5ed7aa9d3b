package nomad

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// The line reader around the limit, below and above the 64 KiB read buffer: a line
// of exactly MaxFrameBytes is returned, a longer one is dropped whole, the
// next line is read intact, and no more than the limit is ever held.
func TestLineReaderLimit(t *testing.T) {
	t.Parallel()
	frame := func(n int, first string) string {
		f := `{` + first + `,"Events":[{"Topic":"Job","Payload":""}]}`
		return strings.Replace(f, `""`, `"`+strings.Repeat("x", n-len(f))+`"`, 1)
	}
	const idx = `"Index":7`
	for _, limit := range []int{2 << 10, 100 << 10} {
		tests := []struct {
			name    string
			line    string // followed by "\n{}\n" unless it ends the stream
			last    bool
			ok      bool // returned, not too large
			indexOK bool
		}{
			{"at the limit", frame(limit, idx), false, true, false},
			{"one byte over", frame(limit+1, idx), false, false, true},
			{"far over", frame(3*limit+5, idx), false, false, true},
			{"over, Index not first", frame(limit+1, `"Other":1,`+idx), false, false, false},
			{"over, Index with spaces", frame(limit+1, ` "Index" : 7 `), false, false, true},
			{"over, the stream ends in it", frame(limit+1, idx), true, false, true},
		}
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%d/%s", limit, tt.name), func(t *testing.T) {
				t.Parallel()
				in := tt.line
				if !tt.last {
					in += "\n{}\n"
				}
				s := newLineReader(64<<10, limit)
				s.reset(strings.NewReader(in))
				line, err := s.next()
				if c := max(s.held, cap(s.long)); c > limit {
					t.Errorf("held %d bytes, want at most %d", c, limit)
				}
				var big *frameTooLarge
				switch {
				case tt.ok && (err != nil || string(line) != tt.line):
					t.Fatalf("got %d bytes, %v; want the %d-byte line", len(line), err, len(tt.line))
				case !tt.ok && !errors.As(err, &big):
					t.Fatalf("got %d bytes, %v; want the line too large", len(line), err)
				case !tt.ok:
					if big.indexOK != tt.indexOK || (tt.indexOK && big.index != 7) {
						t.Errorf("got index %d (known %v), want known %v", big.index, big.indexOK, tt.indexOK)
					}
					wantRead, wantErr := len(tt.line)+1, error(nil)
					if tt.last {
						wantRead, wantErr = len(tt.line), io.EOF
					}
					if big.read != wantRead || big.err != wantErr {
						t.Errorf("got %d bytes read, ended by %v; want %d, %v", big.read, big.err, wantRead, wantErr)
					}
				}
				if tt.last {
					return
				}
				if line, err := s.next(); string(line) != "{}" || err != nil {
					t.Errorf("next line: got %q, %v; want {}", line, err)
				}
			})
		}
	}
}

// Lines of every length around the read buffer's size come back whole and
// in order, a short last line without its newline with the stream's end.
func TestLineReaderSplits(t *testing.T) {
	t.Parallel()
	var in strings.Builder
	var want []string
	for _, n := range []int{0, 1, 100, 64<<10 - 1, 64 << 10, 64<<10 + 1, 200 << 10, 3} {
		line := strings.Repeat("a", n)
		want = append(want, line)
		in.WriteString(line + "\n")
	}
	in.WriteString("tail")
	s := newLineReader(64<<10, 1<<20)
	s.reset(strings.NewReader(in.String()))
	for i, w := range want {
		line, err := s.next()
		if err != nil || string(line) != w {
			t.Fatalf("line %d: got %d bytes, %v; want %d bytes", i, len(line), err, len(w))
		}
	}
	if line, err := s.next(); string(line) != "tail" || err != io.EOF {
		t.Errorf("last line: got %q, %v; want tail, EOF", line, err)
	}
}
