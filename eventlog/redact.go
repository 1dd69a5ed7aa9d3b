package eventlog

import (
	"io"

	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

// Redacted is what a redacted string becomes.
const Redacted = "REDACTED"

// RedactedFields are the job-spec fields whose strings are replaced, as
// paths below a job ("*" is any key or array index). Every string inside
// them is replaced, keys and structure kept: an env block keeps its names,
// an auth block its keys, so a consumer's schema still holds.
var RedactedFields = []string{
	"TaskGroups.*.Tasks.*.Env",                        // env blocks: often tokens and passwords
	"TaskGroups.*.Tasks.*.Config.auth",                // docker driver registry credentials
	"TaskGroups.*.Tasks.*.Templates.*.EmbeddedTmpl",   // inline templates: secrets rendered in
	"TaskGroups.*.Tasks.*.Artifacts.*.GetterSource",   // URLs with credentials (git::https://user:token@...)
	"TaskGroups.*.Tasks.*.Artifacts.*.GetterOptions",  // s3/gcs keys, ssh keys
	"TaskGroups.*.Tasks.*.Artifacts.*.GetterHeaders",  // Authorization headers
	"TaskGroups.*.Tasks.*.Services.*.Checks.*.Header", // HTTP check headers
	"TaskGroups.*.Services.*.Checks.*.Header",         // the same, group services
	"TaskGroups.*.Tasks.*.Services.*.Checks.*.Body",   // HTTP check bodies
	"TaskGroups.*.Services.*.Checks.*.Body",           // the same, group services
	"Payload",                                         // a dispatched job's input
}

// jobRoots are where a job sits in an event: a Job event's payload, and
// the job an Allocation event's allocation carries.
var jobRoots = map[string]string{
	"Job":        "Payload.Job",
	"Allocation": "Payload.Allocation.Job",
}

// RedactFields is RedactedFields below each topic's job root: what the
// stream reader locates in the pass that validates each frame, so that
// redaction costs no second walk over the event (a separate walker made
// eventlog 1.5 times slower; docs/BENCHMARKS.md).
func RedactFields() nomad.Fields {
	f := nomad.Fields{}
	for topic, root := range jobRoots {
		for _, p := range RedactedFields {
			f[topic] = append(f[topic], root+"."+p)
		}
	}
	return f
}

// redaction is RedactFields compiled. The paths are constants: one that
// does not compile is a programming error, found at start (and by every
// test), never a silent lack of redaction.
var redaction = func() *nomad.Locator {
	l, err := nomad.NewLocator(RedactFields())
	if err != nil {
		panic("eventlog: " + err.Error())
	}
	return l
}()

// redactedValue replaces each located string.
var redactedValue = []byte(`"` + Redacted + `"`)

// locate is the Streamer's Config.Locate for o: the redacted fields, unless
// o asks for none.
func locate(o Options) *nomad.Locator {
	if o.Unredacted {
		return nil
	}
	return redaction
}

// lines is the stdout writer for o, writing to w through a buffer of size
// bytes (0: Lines' default).
func lines(o Options, w io.Writer, size int, flushed func(nomad.Position)) *nomad.Lines {
	lo := nomad.LinesOptions{BufferSize: size, Flushed: flushed}
	if !o.Unredacted {
		lo.Replace = redactedValue
	}
	return nomad.NewLines(w, lo)
}
