package nomadtest

import "testing"

// StartT starts a server with opts for a test and closes it when t ends.
func StartT(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}
