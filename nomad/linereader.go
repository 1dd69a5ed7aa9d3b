package nomad

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
)

// lineReader splits the stream into lines, bounded: a line longer than max
// is read to its end without being kept (a *frameTooLarge says what is
// known of it), so one frame never takes more than max bytes of memory.
type lineReader struct {
	br     *bufio.Reader
	max    int      // the longest line kept
	long   []byte   // a line longer than the read buffer, whole
	pieces [][]byte // such a line while it is read
	cur    int      // the piece being filled
	held   int      // the capacity of the pieces
}

// newLineReader reads lines of at most max bytes through a read buffer of
// size bytes.
func newLineReader(size, max int) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(nil, size), max: max}
}

// reset starts reading r (nil: let the last reader go).
func (s *lineReader) reset(r io.Reader) { s.br.Reset(r) }

// frameTooLarge is a line longer than the limit, read to its end (or to the
// end of the stream) without being kept.
type frameTooLarge struct {
	index   uint64 // read from the frame's end or start
	indexOK bool
	read    int   // bytes read, the newline included when it came
	err     error // what ended the stream before the newline; nil when it came
}

func (e *frameTooLarge) Error() string {
	return fmt.Sprintf("reading the stream: a frame is larger than the limit (%d bytes read)", e.read)
}

// next returns the next line without its newline. At the end of the
// stream it returns what is left (a last line without a newline) and the
// error. A line longer than MaxFrameBytes is not kept: it is read to its end
// and dropped, and readLine returns a *frameTooLarge saying what is known of
// it.
//
// A line longer than the read buffer is kept in pieces while it is read
// (pieces are never copied to grow, and add up to MaxFrameBytes at most), and
// copied into one buffer of its exact size once its newline has come: a
// frame over the limit costs at most the limit, one within it twice its size.
func (s *lineReader) next() ([]byte, error) {
	limit := s.max
	if cap(s.long) > 1<<20 {
		s.long = nil // do not keep a past multi-megabyte frame's memory
	}
	line, err := s.br.ReadSlice('\n')
	if err != bufio.ErrBufferFull {
		content := line
		if err == nil {
			content = line[:len(line)-1]
		}
		if len(content) > limit {
			return nil, s.discard(line, line, len(line), err)
		}
		return content, err
	}
	for i := range s.pieces {
		s.pieces[i] = s.pieces[i][:0]
	}
	s.cur = 0
	n := 0 // bytes kept
	for {
		content := line
		if err == nil {
			content = line[:len(line)-1]
		}
		if n+len(content) > limit {
			prefix := line
			if n > 0 {
				prefix = s.pieces[0]
			}
			return nil, s.discard(prefix, line, n+len(line), err)
		}
		s.keep(content)
		n += len(content)
		switch err {
		case nil:
			return s.join(n), nil
		case bufio.ErrBufferFull:
		default:
			return s.join(n), err
		}
		line, err = s.br.ReadSlice('\n')
	}
}

// keep copies b to the pieces, adding a piece when they are full: twice the
// last one, but never more than what is left of MaxFrameBytes.
func (s *lineReader) keep(b []byte) {
	for len(b) > 0 {
		if s.cur == len(s.pieces) {
			c := 64 << 10
			if s.cur > 0 {
				c = 2 * cap(s.pieces[s.cur-1])
			}
			c = min(c, s.max-s.held) // > 0: held is what is kept, less than the line
			s.pieces = append(s.pieces, make([]byte, 0, c))
			s.held += c
		}
		p := s.pieces[s.cur]
		k := min(len(b), cap(p)-len(p))
		s.pieces[s.cur] = append(p, b[:k]...)
		b = b[k:]
		if len(s.pieces[s.cur]) == cap(p) {
			s.cur++
		}
	}
}

// join returns the n bytes kept in the pieces as one line. Pieces of up to
// 1 MiB in all are kept for the next long line; more are let go.
func (s *lineReader) join(n int) []byte {
	if cap(s.long) < n {
		s.long = make([]byte, 0, n)
	}
	s.long = s.long[:0]
	for _, p := range s.pieces {
		s.long = append(s.long, p...)
	}
	if s.held > 1<<20 {
		s.pieces, s.held = nil, 0
	}
	return s.long
}

// discard reads the rest of an oversize line and drops it. prefix is its
// first bytes, last the latest bytes read, read how many were read, err the
// last read's error. The frame's index is read from its end, where Nomad
// 2.0.5 writes it (`{"Events":[...],"Index":N}`, recorded in transcripts
// B1–B3), or from its start, where other encoders put it.
func (s *lineReader) discard(prefix, last []byte, read int, err error) *frameTooLarge {
	big := &frameTooLarge{read: read}
	big.index, big.indexOK = leadingIndex(prefix)
	s.pieces, s.held = nil, 0 // their memory can go now
	var tail [tailBytes]byte
	t := appendTail(tail[:0], last)
	for err == bufio.ErrBufferFull {
		var line []byte
		line, err = s.br.ReadSlice('\n')
		big.read += len(line)
		t = appendTail(t, line)
	}
	big.err = err
	if !big.indexOK && err == nil {
		big.index, big.indexOK = trailingIndex(t)
	}
	return big
}

// tailBytes is how much of a dropped frame's end is kept to read its index:
// `],"Index":18446744073709551615}` and the newline fit.
const tailBytes = 48

// appendTail appends b to t and keeps the last tailBytes bytes, in t's
// array (cap tailBytes).
func appendTail(t, b []byte) []byte {
	if len(b) >= tailBytes {
		return append(t[:0], b[len(b)-tailBytes:]...)
	}
	if drop := len(t) + len(b) - tailBytes; drop > 0 {
		t = append(t[:0], t[drop:]...)
	}
	return append(t, b...)
}

// trailingIndex reads N from a line that ends `],"Index":N}`, as Nomad
// writes every frame: the `]` closing the Events array keeps an "Index"
// nested in the last event's payload from being taken for it.
func trailingIndex(b []byte) (uint64, bool) {
	b = bytes.TrimRight(b, " \t\r\n")
	b, ok := bytes.CutSuffix(b, []byte("}"))
	if !ok {
		return 0, false
	}
	b = bytes.TrimRight(b, " \t\r\n")
	i := len(b)
	for i > 0 && b[i-1] >= '0' && b[i-1] <= '9' {
		i--
	}
	digits := b[i:]
	if len(digits) == 0 || len(digits) > 20 || (len(digits) > 1 && digits[0] == '0') {
		return 0, false
	}
	n, err := strconv.ParseUint(string(digits), 10, 64)
	if err != nil {
		return 0, false
	}
	rest := bytes.TrimRight(b[:i], " \t\r\n")
	for _, want := range []string{":", `"Index"`, ",", "]"} {
		var ok bool
		if rest, ok = bytes.CutSuffix(rest, []byte(want)); !ok {
			return 0, false
		}
		rest = bytes.TrimRight(rest, " \t\r\n")
	}
	return n, true
}

// leadingIndex reads N from a frame that starts `{"Index":N,`, as Nomad
// writes every frame.
func leadingIndex(b []byte) (uint64, bool) {
	var p frameParser
	i := p.ws(b, 0)
	if i >= len(b) || b[i] != '{' {
		return 0, false
	}
	i = p.ws(b, i+1)
	if i >= len(b) || b[i] != '"' {
		return 0, false
	}
	end, err := scanString(b, i)
	if err != nil || string(b[i+1:end-1]) != "Index" {
		return 0, false
	}
	if i, err = p.colon(b, end); err != nil {
		return 0, false
	}
	n, i, err := scanUint(b, i)
	if err != nil || i >= len(b) { // digits up to the end may be cut short
		return 0, false
	}
	return n, true
}
