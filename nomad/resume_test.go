package nomad

import "testing"

// The resume rules, one decision each: what a frame at idx is, given what
// was handed over before.
func TestResume(t *testing.T) {
	t.Parallel()
	at := func(last uint64, frames int) resumeState {
		return resumeState{last: last, known: true, atLast: frames}
	}
	tests := []struct {
		name  string
		r     resumeState
		idx   uint64
		first bool
		want  verdict
		after resumeState
	}{
		{"nothing written yet: every frame is new", resumeState{}, 5, true, fresh, resumeState{}},
		{"the frame resumed from comes again", at(10, 0), 10, true, repeated, resumeState{last: 10, known: true, repeat: -1}},
		{"every frame at the resume index is dropped when their count is unknown", resumeState{last: 10, known: true, repeat: -1}, 10, false, repeated, resumeState{last: 10, known: true, repeat: -1}},
		{"one of two frames written: the first is dropped", at(10, 1), 10, true, repeated, resumeState{last: 10, known: true, atLast: 1}},
		{"one of two frames written: the second is new", resumeState{last: 10, known: true, atLast: 1}, 10, false, further, resumeState{last: 10, known: true, atLast: 1}},
		{"a further frame at the index written last, in one session", at(10, 1), 10, false, further, at(10, 1)},
		{"the next index", at(10, 1), 11, false, fresh, at(10, 1)},
		{"after the repeats, the next index", resumeState{last: 10, known: true, atLast: 1, repeat: -1}, 12, false, fresh, at(10, 1)},
		{"a first frame above the last: a gap", at(10, 1), 20, true, gap, at(10, 1)},
		{"a first frame below the last: a reset", at(10, 1), 3, true, reset, at(10, 1)},
		{"below the last within a session: out of order", at(10, 1), 9, false, disorder, at(10, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, after := resume(tt.r, tt.idx, tt.first)
			if got != tt.want || after != tt.after {
				t.Errorf("got %v, %+v; want %v, %+v", got, after, tt.want, tt.after)
			}
		})
	}
}

// handed moves the position, counting the frames at one index.
func TestHanded(t *testing.T) {
	t.Parallel()
	r := resumeState{}.handed(4)
	if r.position() != (Position{Index: 4, Written: true, Frames: 1}) {
		t.Errorf("got %+v", r.position())
	}
	if r = r.handed(4); r.position().Frames != 2 {
		t.Errorf("a second frame at 4: got %+v", r.position())
	}
	if r = r.handed(5); r.position() != (Position{Index: 5, Written: true, Frames: 1}) {
		t.Errorf("got %+v", r.position())
	}
	// A Position from before the count was kept: 0 frames, "every one".
	if r := (resumeState{last: 7, known: true}).handed(7); r.atLast != 1 {
		t.Errorf("a frame at an index of unknown count: got %d frames, want 1", r.atLast)
	}
	if (resumeState{}).position().Written {
		t.Error("nothing handed over, but the position says written")
	}
}
