package nomad

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// MaxAnswer bounds one JSON answer Get reads: a job of hundreds of tasks is
// a few MB; more is not an answer Nomad gives.
const MaxAnswer = 32 << 20

// Get asks Nomad for path (/v1/jobs, /v1/job/web, ...) with query q, decodes
// the JSON answer into out, and returns Nomad's index (X-Nomad-Index, 0 when
// absent). ctx bounds the whole call. A non-200 answer is an *HTTPError; a
// 403 also wraps ErrRefused.
func (c *Client) Get(ctx context.Context, path string, q url.Values, out any) (index uint64, err error) {
	if q == nil {
		q = url.Values{}
	}
	resp, err := c.do(ctx, http.MethodGet, path, q, nil)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		herr := &HTTPError{Status: resp.StatusCode, Body: strings.TrimSpace(string(body))}
		if resp.StatusCode == http.StatusForbidden {
			return 0, fmt.Errorf("GET %s: %w", path, errors.Join(herr, ErrRefused))
		}
		return 0, fmt.Errorf("GET %s: %w", path, herr)
	}
	body := &io.LimitedReader{R: resp.Body, N: MaxAnswer + 1}
	if err := json.NewDecoder(body).Decode(out); err != nil {
		if body.N <= 0 {
			return 0, fmt.Errorf("GET %s: the answer is larger than %d MiB", path, MaxAnswer>>20)
		}
		return 0, fmt.Errorf("GET %s: reading the answer: %w", path, err)
	}
	index, _ = strconv.ParseUint(resp.Header.Get("X-Nomad-Index"), 10, 64)
	return index, nil
}

// ErrRefused marks an answer that says the token may not do what was asked
// (403): retrying with the same token will not help.
var ErrRefused = errors.New("refused by Nomad: the token lacks a permission (see the ACL policy)")
