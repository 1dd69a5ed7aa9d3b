package nomadtest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// A failing Nomad's answers: transcript H1 (a server without a leader)
// replayed against the fake with SetFailStatus(500), and H2's subscription
// (a client agent whose servers refuse connections). Compared: the status,
// Content-Type, no X-Nomad-Index, and the text, whole (H1) or its form
// (H2: the fake says "No cluster leader" where the agent said its dial
// error). Not compared: H1's 5 s hold before each answer and H2's reads,
// which Nomad did not answer in 30 s (failAnswer says why).
func TestConformsToFailingNomad(t *testing.T) {
	t.Parallel()
	s := StartT(t, Options{})
	s.SetFailStatus(http.StatusInternalServerError)
	replayed := 0
	for i, st := range Transcript(t, "H1") {
		if st.Response == nil || st.Response.Status != http.StatusInternalServerError {
			continue // the stream (200, then silence) and /v1/agent/self: the fake serves neither so
		}
		var want string
		if err := json.Unmarshal(st.Response.Body, &want); err != nil {
			t.Fatalf("H1/%d: %v", i, err)
		}
		checkFail(t, s.URL+st.Request.Path, st.Response.Status, st.Response.Headers["Content-Type"], want)
		replayed++
	}
	if replayed != 7 {
		t.Fatalf("replayed %d of H1's failed reads, want 7", replayed)
	}
	for _, st := range Transcript(t, "H2") {
		if st.Request == nil || !strings.HasPrefix(st.Request.Path, "/v1/event/stream") {
			continue
		}
		checkFail(t, s.URL+st.Request.Path, st.Response.Status, st.Response.Headers["Content-Type"], "No cluster leader")
		replayed++
	}
	if replayed != 8 {
		t.Fatalf("replayed %d steps, want H2's subscription too", replayed)
	}
}

func checkFail(t *testing.T, url string, status int, contentType, text string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status || resp.Header.Get("Content-Type") != contentType || string(body) != text {
		t.Errorf("%s: %d %q %q, Nomad %d %q %q", url, resp.StatusCode, resp.Header.Get("Content-Type"), body, status, contentType, text)
	}
	if idx := resp.Header.Get("X-Nomad-Index"); idx != "" {
		t.Errorf("%s: X-Nomad-Index %q, Nomad sends none", url, idx)
	}
}
