package nomad

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/api"
)

// JWKS reads the key set whole up to MaxJWKS, refuses a larger one, and
// turns an answer other than 200 into an *HTTPError.
func TestJWKS(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		status int
		body   string
		want   func(t *testing.T, got []byte, err error)
	}{
		{"a set", 200, `{"keys":[]}`, func(t *testing.T, got []byte, err error) {
			if err != nil || string(got) != `{"keys":[]}` {
				t.Errorf("got %q, %v", got, err)
			}
		}},
		{"exactly MaxJWKS", 200, strings.Repeat("x", MaxJWKS), func(t *testing.T, got []byte, err error) {
			if err != nil || len(got) != MaxJWKS {
				t.Errorf("got %d bytes, %v", len(got), err)
			}
		}},
		{"one byte more", 200, strings.Repeat("x", MaxJWKS+1), func(t *testing.T, got []byte, err error) {
			if !errors.Is(err, ErrJWKSTooLarge) {
				t.Errorf("got %d bytes, %v; want ErrJWKSTooLarge", len(got), err)
			}
		}},
		{"no leader", 500, "No cluster leader", func(t *testing.T, got []byte, err error) {
			var he *HTTPError
			if !errors.As(err, &he) || he.Status != 500 {
				t.Errorf("got %v, want an *HTTPError 500", err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != JWKSPath {
					http.NotFound(w, r)
					return
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			t.Cleanup(srv.Close)
			c, err := NewClient(&api.Config{Address: srv.URL}, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.JWKS(t.Context())
			tc.want(t, got, err)
		})
	}
}
