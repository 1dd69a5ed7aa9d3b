package registry

import (
	"errors"
	"fmt"
	"testing"
)

// dockerd's pull messages, as dockerd 20.10 writes them inside the stream
// (seen in this project's real-dockerd tests), typed once here.
func TestPullErrorKinds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		msg  string
		want error
	}{
		{"manifest for 127.0.0.1:5000/x:1 not found: manifest unknown: manifest unknown", ErrPullNotFound},
		{"toomanyrequests: You have reached your pull rate limit.", ErrPullRateLimited},
		{"Head \"https://127.0.0.1:5000/v2/x/manifests/1\": unauthorized: authentication required", ErrPullUnauthorized},
		{"pull access denied for x, repository does not exist or may require 'docker login'", nil},
		{"received unexpected HTTP status: 500 Internal Server Error", nil},
		{"failed to resolve reference \"127.0.0.1:5000/x:1\": unexpected status from HEAD request to http://127.0.0.1:5000/v2/x/manifests/1: 429 Too Many Requests", ErrPullRateLimited}, // Docker 29.7.2's containerd store
		// Docker 29.7.2's containerd store, a blob the registry lost (as
		// 20.10's "unknown blob"): not a missing manifest.
		{"failed to copy: httpReadSeeker: failed open: could not fetch content descriptor sha256:ab (application/vnd.docker.image.rootfs.diff.tar.gzip) from remote: not found", nil},
	}
	for _, tt := range tests {
		err := fmt.Errorf("pulling x: %w", pullError(tt.msg, nil))
		for _, kind := range []error{ErrPullNotFound, ErrPullRateLimited, ErrPullUnauthorized} {
			if got := errors.Is(err, kind); got != (kind == tt.want) {
				t.Errorf("%q: errors.Is(%v) = %v", tt.msg, kind, got)
			}
		}
		if err.Error() != "pulling x: "+tt.msg {
			t.Errorf("got %q, want the daemon's words kept", err)
		}
	}
	// An API error keeps what it wraps.
	api := errors.New("Error response from daemon: manifest unknown")
	if err := pullError(api.Error(), api); !errors.Is(err, api) || !errors.Is(err, ErrPullNotFound) {
		t.Errorf("an API error: %v lost its cause or kind", err)
	}
}
