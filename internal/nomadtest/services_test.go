package nomadtest

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The service registrations' conformance: transcript D's reads of
// /v1/service/:name (a registration of rec-svc, a service with none, the
// service after its job stopped) against the fake given the same
// registration, but its blocking reads (?index=: the fake answers at once).
// Compared: status, Content-Type, and every key of every
// element but the indexes (the fake's are its own).
func TestConformsToNomadServices(t *testing.T) {
	srv := StartT(t, Options{})
	var reg Registration
	compared := 0
	for i, st := range Transcript(t, "D") {
		if st.Request == nil || st.Request.Method != "GET" || !strings.HasPrefix(st.Request.Path, "/v1/service/") || strings.Contains(st.Request.Path, "index=") {
			continue
		}
		var want []map[string]any
		if err := json.Unmarshal(st.Response.Body, &want); err != nil {
			t.Fatalf("D/%d: %v", i, err)
		}
		if len(want) == 1 && reg.NodeID == "" {
			w := want[0]
			reg = Registration{Namespace: w["Namespace"].(string), Service: w["ServiceName"].(string), JobID: w["JobID"].(string),
				NodeID: w["NodeID"].(string), AllocID: w["AllocID"].(string), Group: "g",
				Address: net.JoinHostPort(w["Address"].(string), strconv.Itoa(int(w["Port"].(float64))))}
			srv.SetRegistrations(reg)
		}
		if len(want) == 0 && strings.Contains(st.Note, "after the stop") {
			srv.SetRegistrations()
		}
		path, _, _ := strings.Cut(st.Request.Path, "?")
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != st.Response.Status || resp.Header.Get("Content-Type") != st.Response.Headers["Content-Type"] {
			t.Errorf("D/%d %s: %d %q, Nomad %d %q", i, st.Request.Path, resp.StatusCode, resp.Header.Get("Content-Type"), st.Response.Status, st.Response.Headers["Content-Type"])
		}
		var got []map[string]any
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("D/%d: the fake answered %q: %v", i, body, err)
		}
		for _, es := range [][]map[string]any{got, want} {
			for _, e := range es {
				delete(e, "CreateIndex")
				delete(e, "ModifyIndex")
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("D/%d %s:\n got %v\nwant %v", i, st.Request.Path, got, want)
		}
		compared++
	}
	if compared < 4 {
		t.Fatalf("compared %d of D's service reads, want at least 4", compared)
	}
}

// The recorded answer of a Nomad v2.0.5 with ACLs on, two client nodes each
// running the prefetch job, read with the job's workload identity
// (testdata/nomad-2.0.5/service-prefetch-acl.json): the fake, given the same
// two registrations in the other order, answers the same elements (but
// the indexes) in the same order, Nomad's: by registration ID.
func TestServicesAnswerTwoNodesAsNomad(t *testing.T) {
	rec, err := os.ReadFile("testdata/nomad-2.0.5/service-prefetch-acl.json")
	if err != nil {
		t.Fatal(err)
	}
	var want []map[string]any
	if err := json.Unmarshal(rec, &want); err != nil {
		t.Fatal(err)
	}
	if len(want) != 2 {
		t.Fatalf("the recording lists %d registrations, want 2", len(want))
	}
	srv := StartT(t, Options{})
	var regs []Registration
	for _, w := range slices.Backward(want) {
		regs = append(regs, Registration{Namespace: w["Namespace"].(string), Service: w["ServiceName"].(string), JobID: w["JobID"].(string),
			NodeID: w["NodeID"].(string), AllocID: w["AllocID"].(string),
			Address: net.JoinHostPort(w["Address"].(string), strconv.Itoa(int(w["Port"].(float64))))})
	}
	srv.SetRegistrations(regs...)
	resp, err := http.Get(srv.URL + "/v1/service/prefetch?namespace=default")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got []map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("the fake answered %q: %v", body, err)
	}
	for _, es := range [][]map[string]any{got, want} {
		for _, e := range es {
			delete(e, "CreateIndex")
			delete(e, "ModifyIndex")
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the fake:\n got %v\nwant %v", got, want)
	}
}
