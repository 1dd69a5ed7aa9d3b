package nomadtest

import (
	"embed"
	"encoding/json"
	"testing"
)

// The recordings the fake's behaviours come from, request by request
// (testdata/nomad-2.0.5/README.md says how each was captured). They are
// embedded so that a test of any package reads them by name.
//
//go:embed testdata/nomad-2.0.5/transcripts/*.json
var transcripts embed.FS

// TranscriptStep is one step of a recording: a note, a request and Nomad
// 2.0.5's answer (either may be absent).
type TranscriptStep struct {
	Note    string  `json:"note"`
	T       float64 `json:"t_s"`
	Elapsed float64 `json:"elapsed_s"`
	Request *struct {
		Method  string            `json:"method"`
		Path    string            `json:"path"`
		Body    json.RawMessage   `json:"body"`
		Headers map[string]string `json:"headers"`
	} `json:"request"`
	Response *struct {
		Status  int               `json:"status"`
		Headers map[string]string `json:"headers"`
		Body    json.RawMessage   `json:"body"`
		// StreamHeaders are the headers of an event stream's answer, where
		// the recording kept them apart (B5).
		StreamHeaders map[string]string `json:"stream_headers"`
	} `json:"response"`
}

// Transcript returns the steps of the recording name ("A1" to "H2"), in
// their recorded order.
func Transcript(t testing.TB, name string) []TranscriptStep {
	t.Helper()
	b, err := transcripts.ReadFile("testdata/nomad-2.0.5/transcripts/" + name + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var steps []TranscriptStep
	if err := json.Unmarshal(b, &steps); err != nil {
		t.Fatalf("transcript %s: %v", name, err)
	}
	return steps
}
