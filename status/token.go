package status

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
)

// The bounds of a bearer token file's content.
const (
	MinTokenLen = 16   // bytes: shorter is guessable
	maxTokenLen = 4096 // bytes read at most
)

// TokenError is a token file that can't be used: unreadable, empty, too
// short or long, or holding more than one token.
type TokenError struct {
	Path string
	Err  error
}

func (e *TokenError) Error() string { return fmt.Sprintf("the token file %s: %v", e.Path, e.Err) }
func (e *TokenError) Unwrap() error { return e.Err }

// ReadToken reads the bearer token in path: the file's content without
// surrounding whitespace (a template renders a trailing newline), at least
// MinTokenLen bytes of printable ASCII with no space in between. Both ends
// use it: the agent for -status-token-file, the clients for -token-file.
func ReadToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", &TokenError{path, err}
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenLen+1))
	if err != nil {
		return "", &TokenError{path, err}
	}
	if len(b) > maxTokenLen {
		return "", &TokenError{path, fmt.Errorf("longer than %d bytes: not a token", maxTokenLen)}
	}
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0:
		return "", &TokenError{path, errors.New("empty")}
	case len(b) < MinTokenLen:
		return "", &TokenError{path, fmt.Errorf("%d bytes: want at least %d (e.g. openssl rand -hex 32)", len(b), MinTokenLen)}
	}
	for i, c := range b {
		if c <= ' ' || c > '~' {
			return "", &TokenError{path, fmt.Errorf("byte %d is %q: want one token of printable ASCII, no space", i, c)}
		}
	}
	return string(b), nil
}

// Token checks requests' bearer tokens against a token file, read again
// at every check: a rotated file takes effect at the next request, with no
// restart and no stale copy in memory. Comparison is in constant time
// (over SHA-256 digests, so neither the content nor the length leaks).
type Token struct {
	path string
	log  *slog.Logger

	mu      sync.Mutex
	lastErr string // the last read error logged, to log each change once
}

// OpenToken returns the Token of path, or the *TokenError that the file
// can't be used now: an agent refuses to start with it.
func OpenToken(path string, log *slog.Logger) (*Token, error) {
	if _, err := ReadToken(path); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Token{path: path, log: log}, nil
}

// Path is the token file.
func (t *Token) Path() string { return t.path }

// Allows reports whether r carries "Authorization: Bearer TOKEN" with the
// file's token. A file that can't be read now allows nothing, and is
// logged (once per distinct failure).
func (t *Token) Allows(r *http.Request) bool {
	given, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		return false
	}
	want, err := ReadToken(t.path)
	t.noteErr(err)
	if err != nil {
		return false
	}
	g, w := sha256.Sum256([]byte(given)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

func (t *Token) noteErr(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	t.mu.Lock()
	changed := msg != t.lastErr
	t.lastErr = msg
	t.mu.Unlock()
	switch {
	case changed && err != nil:
		t.log.Warn("the status token file can't be used: /v1/status and /metrics refuse every token on the public listener", "error", msg)
	case changed:
		t.log.Info("the status token file is usable again", "file", t.path)
	}
}

// bearer is the token of an Authorization header's Bearer credentials.
func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}
