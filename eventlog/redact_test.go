package eventlog

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

// jobWithSecrets is a job as Nomad encodes it (keys in alphabetical order),
// with a secret in every field RedactedFields names, and values elsewhere
// whose bytes must pass untouched: a number above 2^53, escapes, <>&.
const jobWithSecrets = `{"Affinities":null,"ID":"w\u00e9b<>&","Meta":{"owner":"ops"},"Payload":"c2VjcmV0LXBheWxvYWQ=",` +
	`"SubmitTime":9007199254740993,"TaskGroups":[{"Name":"g","Services":[{"Checks":[{"Body":"secret-body","Header":{"Authorization":["Bearer secret-group-check"]},"Path":"/health"}],"Name":"svc"}],` +
	`"Tasks":[{"Artifacts":[{"GetterHeaders":{"X-Token":"secret-header"},"GetterOptions":{"sshkey":"secret-ssh"},"GetterSource":"git::https://u:secret-git@example.com/r.git"}],` +
	`"Config":{"args":["-v"],"auth":{"password":"secret-password","username":"secret-user"},"image":"registry.example:5000/web:1.2"},` +
	`"Env":{"DB_PASSWORD":"secret-db","EMPTY":""},"Name":"web",` +
	`"Services":[{"Checks":[{"Header":{"X-Api-Key":["secret-task-check"]}}]}],` +
	`"Templates":[{"DestPath":"local/x.env","EmbeddedTmpl":"TOKEN=secret-template\n"}]}]}],"Version":3}`

// redactedJob is jobWithSecrets as Redact must write it.
const redactedJob = `{"Affinities":null,"ID":"w\u00e9b<>&","Meta":{"owner":"ops"},"Payload":"REDACTED",` +
	`"SubmitTime":9007199254740993,"TaskGroups":[{"Name":"g","Services":[{"Checks":[{"Body":"REDACTED","Header":{"Authorization":["REDACTED"]},"Path":"/health"}],"Name":"svc"}],` +
	`"Tasks":[{"Artifacts":[{"GetterHeaders":{"X-Token":"REDACTED"},"GetterOptions":{"sshkey":"REDACTED"},"GetterSource":"REDACTED"}],` +
	`"Config":{"args":["-v"],"auth":{"password":"REDACTED","username":"REDACTED"},"image":"registry.example:5000/web:1.2"},` +
	`"Env":{"DB_PASSWORD":"REDACTED","EMPTY":"REDACTED"},"Name":"web",` +
	`"Services":[{"Checks":[{"Header":{"X-Api-Key":["REDACTED"]}}]}],` +
	`"Templates":[{"DestPath":"local/x.env","EmbeddedTmpl":"REDACTED"}]}]}],"Version":3}`

func eventLine(topic, payload string) string {
	return `{"FilterKeys":null,"Index":7,"Key":"web","Namespace":"default","Payload":` + payload + `,"Topic":"` + topic + `","Type":"T"}`
}

// redact is what eventlog writes of event: its strings located as the
// stream reader locates them, written by the stdout writer.
func redact(topic string, event []byte) ([]byte, error) {
	spans, err := redaction.Strings(nil, topic, event)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	l := lines(Options{}, &out, 0, nil)
	if err := l.Event(nomad.Event{Topic: topic, Raw: event, Strings: spans}); err != nil {
		return nil, err
	}
	if err := l.Idle(nomad.Position{}); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(out.Bytes(), []byte("\n")), nil
}

func TestRedact(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, topic, in, want string
	}{
		{"job event", "Job", eventLine("Job", `{"Job":`+jobWithSecrets+`}`), eventLine("Job", `{"Job":`+redactedJob+`}`)},
		{"a purge's payload", "Job", eventLine("Job", `{"Deleted":true,"Job":`+jobWithSecrets+`}`), eventLine("Job", `{"Deleted":true,"Job":`+redactedJob+`}`)},
		{"allocation event", "Allocation", eventLine("Allocation", `{"Allocation":{"ID":"a1","Job":`+jobWithSecrets+`,"TaskStates":{"web":{"State":"running"}}}}`),
			eventLine("Allocation", `{"Allocation":{"ID":"a1","Job":`+redactedJob+`,"TaskStates":{"web":{"State":"running"}}}}`)},
		{"blanks kept", "Job", `{"Payload": {"Job": {"TaskGroups": [ {"Tasks": [ {"Env": {"A" : "s1", "B":"s\"2"} } ] } ] } }, "Topic":"Job"}`,
			`{"Payload": {"Job": {"TaskGroups": [ {"Tasks": [ {"Env": {"A" : "REDACTED", "B":"REDACTED"} } ] } ] } }, "Topic":"Job"}`},
		{"an env elsewhere is not a task's", "Job", eventLine("Job", `{"Job":{"Env":{"A":"x"},"Meta":{"Env":"y"}}}`), eventLine("Job", `{"Job":{"Env":{"A":"x"},"Meta":{"Env":"y"}}}`)},
		{"null and empty fields", "Job", eventLine("Job", `{"Job":{"Payload":null,"TaskGroups":[{"Tasks":[{"Env":null,"Templates":[]}]}]}}`),
			eventLine("Job", `{"Job":{"Payload":null,"TaskGroups":[{"Tasks":[{"Env":null,"Templates":[]}]}]}}`)},
		{"another topic", "Evaluation", eventLine("Evaluation", `{"Job":`+jobWithSecrets+`}`), eventLine("Evaluation", `{"Job":`+jobWithSecrets+`}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := redact(tt.topic, []byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
			if !json.Valid(got) {
				t.Errorf("not JSON: %s", got)
			}
			if tt.topic != "Evaluation" && strings.Contains(string(got), "secret") {
				t.Errorf("a secret is left: %s", got)
			}
		})
	}
}

// Redaction is on by default, end to end: a Job event's secrets never reach
// stdout; -redact=false (Unredacted) writes them as Nomad sent them.
func TestRunRedacts(t *testing.T) {
	t.Parallel()
	for _, unredacted := range []bool{false, true} {
		srv := nomadtest.StartT(t, nomadtest.Options{})
		e := nomadtest.Event{Topic: "Job", Type: "JobRegistered", Key: "web", Namespace: "default", Payload: json.RawMessage(`{"Job":` + jobWithSecrets + `}`)}
		idx := srv.Publish(e)
		o := options(srv.URL)
		o.Index = 0
		o.Unredacted = unredacted
		r := startRun(t, o)
		got := r.stdout.WaitLines(t, 1)[0]
		want := expected(idx, e)
		if !unredacted {
			want = strings.Replace(want, jobWithSecrets, redactedJob, 1)
		}
		if got != want {
			t.Errorf("unredacted=%v: got\n%s\nwant\n%s", unredacted, got, want)
		}
	}
}

func BenchmarkRedact(b *testing.B) {
	ev := []byte(eventLine("Job", `{"Job":`+jobWithSecrets+`}`))
	b.SetBytes(int64(len(ev)))
	for b.Loop() {
		if _, err := redact("Job", ev); err != nil {
			b.Fatal(err)
		}
	}
}

// Whatever JSON object an event is, redaction writes valid JSON, and every
// byte it changes is a whole string turned into "REDACTED".
func FuzzRedact(f *testing.F) {
	f.Add(eventLine("Job", `{"Job":`+jobWithSecrets+`}`))
	f.Add(`{"Payload":{"Job":{"TaskGroups":[{"Tasks":[{"Env":{"A":"\"}]{[","B":[1,{"c":"d"}]}}]}]}}}`)
	f.Add(`{"Payload":{"Allocation":{"Job":{"Payload":[null,true,-1.5e3,"x"]}}}}`)
	f.Fuzz(func(t *testing.T, in string) {
		if !json.Valid([]byte(in)) || !strings.HasPrefix(strings.TrimLeft(in, " \t\r\n"), "{") {
			return // the stream reader hands over objects only
		}
		for _, topic := range []string{"Job", "Allocation"} {
			out, err := redact(topic, []byte(in))
			if err != nil {
				t.Fatalf("valid JSON %q: %v", in, err)
			}
			if !json.Valid(out) {
				t.Fatalf("%q became %q, not JSON", in, out)
			}
			var a, b any
			json.Unmarshal([]byte(in), &a)
			json.Unmarshal(out, &b)
			if !sameBut(a, b) {
				t.Fatalf("%q became %q: more than strings replaced", in, out)
			}
		}
	})
}

// sameBut reports whether b is a with some strings replaced by Redacted.
func sameBut(a, b any) bool {
	switch a := a.(type) {
	case map[string]any:
		bm, ok := b.(map[string]any)
		if !ok || len(bm) != len(a) {
			return false
		}
		for k, v := range a {
			if !sameBut(v, bm[k]) {
				return false
			}
		}
		return true
	case []any:
		bs, ok := b.([]any)
		if !ok || len(bs) != len(a) {
			return false
		}
		for i := range a {
			if !sameBut(a[i], bs[i]) {
				return false
			}
		}
		return true
	case string:
		return b == a || b == Redacted
	default:
		return a == b
	}
}

// An Allocation event as the eventlog benchmark streams it (its job has an
// env block to redact).
func BenchmarkRedactAllocation(b *testing.B) {
	e := nomadtest.AllocationEvent(1, "web", "default")
	e.Index = 1
	ev := nomadtest.Encode(e)
	b.SetBytes(int64(len(ev)))
	for b.Loop() {
		if _, err := redact("Allocation", ev); err != nil {
			b.Fatal(err)
		}
	}
}
