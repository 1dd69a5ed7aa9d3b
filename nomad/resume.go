package nomad

// resumeState is what the resume rules remember from one frame to the next.
type resumeState struct {
	last  uint64 // index of the last frame handed over
	known bool   // last is meaningful
	// atLast counts the frames handed over at index last (0: unknown, after
	// a Position from before it was kept); repeat, those a resume still
	// drops (-1: every one).
	atLast, repeat int
}

// verdict is what the resume rules make of a frame.
type verdict int

const (
	fresh    verdict = iota // new: hand it over
	further                 // a further frame at the last index: new
	gap                     // new, after a gap (the session's first frame is above the last)
	reset                   // new, in a history that went backwards
	repeated                // a frame the resume asked for again: drop it
	disorder                // below the last index within a session: drop it
)

// admitted says whether a frame with this verdict is handed over.
func (v verdict) admitted() bool { return v != repeated && v != disorder }

// resume applies the resume rules to the frame at idx (first: the first
// frame of a subscription) and returns its verdict and the state after it.
//
// A subscription at an index starts with the frame at that index, so a
// resume from the last frame handed over gets it again. Nomad may send one
// index's events in several frames (a registration's Job and Evaluation
// events: testdata split-index.ndjson, recorded on Nomad 2.0.5), so the
// state counts the frames handed over at the last index (atLast, kept in
// Position.Frames across restarts), and a resume drops that many frames at
// it and hands over the rest; a count of 0 (a Position from before it was
// kept) takes every frame at the index as handed over. A first frame above
// the last index is a gap (Nomad no longer buffered it), one below a reset.
func resume(r resumeState, idx uint64, first bool) (verdict, resumeState) {
	if !r.known {
		return fresh, r
	}
	if first {
		r.repeat = r.atLast
		if r.repeat == 0 {
			r.repeat = -1 // all of them
		}
	}
	v := fresh
	switch {
	case idx == r.last && r.repeat != 0:
		if r.repeat > 0 {
			r.repeat--
		}
		return repeated, r
	case idx == r.last:
		return further, r
	case first && idx > r.last:
		v = gap
	case first && idx < r.last:
		v = reset
	case idx < r.last:
		return disorder, r
	}
	r.repeat = 0
	return v, r
}

// handed records that a frame at idx was handed over (or skipped as too
// large): the resume position moves to it.
func (r resumeState) handed(idx uint64) resumeState {
	if r.known && idx == r.last && r.atLast > 0 {
		r.atLast++
	} else {
		r.atLast = 1
	}
	r.last, r.known = idx, true
	return r
}

// position is where the frames handed over so far end.
func (r resumeState) position() Position {
	return Position{Index: r.last, Written: r.known, Frames: r.atLast}
}
