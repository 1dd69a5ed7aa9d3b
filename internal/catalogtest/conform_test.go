package catalogtest

import (
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
)

// The Nomad catalog's conformance: transcript D (Nomad 2.0.5's
// /v1/service answers, copied unchanged into internal/nomadtest's testdata)
// replayed against the fake, with the fake listing the recorded
// registration's address. Compared: the status, Content-Type, which fields a
// registration has, and the values the cluster view reads (Address, Port,
// ServiceName, JobID, Namespace, Tags an empty list); a service with no
// registration (stopped, or never there) answers 200 [].
//
// Not compared, one line each:
//   - IDs, AllocID, NodeID, Datacenter, Create/ModifyIndex: the fake makes
//     its own per agent (nothing in the project reads them but to print).
//   - X-Nomad-Index and the Knownleader/Lastcontact headers: not sent; the
//     cluster view makes no blocking query.
//   - the blocking GETs (?index=&wait=), /v1/services and the job's
//     allocations: not served, as nothing in the project asks them.
func TestConformsToNomadServices(t *testing.T) {
	steps := nomadtest.Transcript(t, "D")
	replayed := 0
	for i, st := range steps {
		if st.Request == nil || st.Request.Method != http.MethodGet || !strings.HasPrefix(st.Request.Path, "/v1/service/") || strings.Contains(st.Request.Path, "?") {
			continue
		}
		var want []map[string]any
		if err := json.Unmarshal(st.Response.Body, &want); err != nil {
			t.Fatalf("D/%d: %v", i, err)
		}
		c := Start(Nomad, "rec-svc", "")
		t.Cleanup(c.Close)
		for _, reg := range want {
			addr := reg["Address"].(string) + ":" + jsonText(reg["Port"])
			c.SetAgents(addr)
			c.SetJob(addr, reg["JobID"].(string))
		}
		resp, err := http.Get(c.URL + st.Request.Path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != st.Response.Status || resp.Header.Get("Content-Type") != st.Response.Headers["Content-Type"] {
			t.Errorf("D/%d %s: status %d %q, Nomad %d %q", i, st.Note, resp.StatusCode, resp.Header.Get("Content-Type"), st.Response.Status, st.Response.Headers["Content-Type"])
		}
		var got []map[string]any
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("D/%d: the fake answered %q: %v", i, body, err)
		}
		if len(got) != len(want) {
			t.Fatalf("D/%d %s: %d registrations, Nomad %d", i, st.Note, len(got), len(want))
		}
		for k := range want {
			if g, w := slices.Sorted(maps.Keys(got[k])), slices.Sorted(maps.Keys(want[k])); !slices.Equal(g, w) {
				t.Errorf("D/%d: fields %q, Nomad's %q", i, g, w)
			}
			for _, f := range []string{"Address", "Port", "ServiceName", "JobID", "Namespace", "Tags"} {
				if g, w := jsonText(got[k][f]), jsonText(want[k][f]); g != w {
					t.Errorf("D/%d: %s = %s, Nomad's %s", i, f, g, w)
				}
			}
		}
		replayed++
	}
	if replayed < 3 {
		t.Fatalf("replayed %d steps of D, want its plain service reads", replayed)
	}
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
