// Package stage owns the staged set: the images of job versions that are
// about to be registered, written by `prefetch stage` into one Nomad
// variable and read by every agent with discovery on, which fetches them on
// the nodes where one of the job's groups can run, as it fetches a
// registered job's.
//
// The set is one variable, Path in namespace Namespace, whose single item
// Item holds the set as JSON. One variable keeps what an agent follows to
// one blocking read (a write of the variable wakes it at once, transcript
// A8 of the recordings) and makes its ModifyIndex the set's version: every
// write, by any stager, gives a higher one, so "this agent has read version
// N" is one comparison. Writers replace it with a check-and-set on that
// index, so two stages at once never lose each other's job.
//
// What a job submitter can make every node keep is bounded: at most MaxJobs
// jobs staged at once, MaxImagesPerJob docker tasks in one, MaxSetBytes for
// the encoded set (Nomad itself refuses a variable over 64 KiB), and
// each string a job gives at most maxString bytes. A set that breaks a bound
// or does not decode is refused whole by Decode with an error naming what;
// the agents report it and keep fetching the rest of their images.
//
// It imports only Nomad's API types and must not import agent, discovery or
// cmd, which import it.
package stage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Where the staged set lives, and its bounds.
const (
	// Path and Namespace name the Nomad variable: agents need read on it
	// (prefetch-policy.hcl), stagers write (prefetch-stage-policy.hcl).
	Path      = "nomad-prefetch/staged"
	Namespace = "default"
	// Item is the variable's one item, the set as JSON.
	Item = "set"

	MaxJobs         = 16
	MaxImagesPerJob = 64
	MaxSetBytes     = 48 << 10
	maxString       = 1024
	// Format is the set's format version; a set of another one is refused.
	Format = 1
)

// DefaultTTL is how long a staged job lasts when stage is given no -ttl.
const DefaultTTL = 24 * time.Hour

// Set is the staged set: every job staged, oldest first.
type Set struct {
	Format int   `json:"format"`
	Jobs   []Job `json:"jobs"`
}

// Job is one job version staged: which job, what it runs where, and how
// long it stays.
type Job struct {
	Namespace string `json:"namespace"`
	ID        string `json:"id"`
	// Base is the registered job's JobModifyIndex when the stage began, 0
	// for a job not registered yet. Once the job is registered again (its
	// JobModifyIndex is no longer Base) the stage has served: the new
	// version names the images from then on, or it is another one, and
	// the staged job is ignored.
	Base     uint64    `json:"base"`
	StagedAt time.Time `json:"staged_at"`
	Expires  time.Time `json:"expires"`
	Spec     Spec      `json:"spec"`
}

// Key is the job's namespace/id.
func (j Job) Key() string { return j.Namespace + "/" + j.ID }

// Expired reports whether the staged job's TTL has passed at now.
func (j Job) Expired(now time.Time) bool { return !now.Before(j.Expires) }

// ErrBad is what Decode and Check wrap: the set breaks a bound or is not a
// set at all.
var ErrBad = errors.New("bad staged set")

// Decode reads the set from the variable's item, refusing it whole when it
// breaks a bound or a rule (see Check).
func Decode(item string) (Set, error) {
	if len(item) > MaxSetBytes {
		return Set{}, fmt.Errorf("%w: %d bytes, over the limit of %d", ErrBad, len(item), MaxSetBytes)
	}
	var s Set
	dec := json.NewDecoder(strings.NewReader(item))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Set{}, fmt.Errorf("%w: %w", ErrBad, err)
	}
	if err := s.Check(); err != nil {
		return Set{}, err
	}
	return s, nil
}

// Encode writes the set as the variable's item, refusing one that breaks a
// bound.
func (s Set) Encode() (string, error) {
	s.Format = Format
	if err := s.Check(); err != nil {
		return "", err
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return "", fmt.Errorf("encoding the staged set: %w", err)
	}
	if b.Len() > MaxSetBytes {
		return "", fmt.Errorf("%w: %d bytes encoded, over the limit of %d (unstage a job with prefetch stage -cancel, or stage fewer at once)", ErrBad, b.Len(), MaxSetBytes)
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// Check applies the set's rules: its format, at most MaxJobs jobs, each
// named, once, with at most MaxImagesPerJob tasks, and no string over the
// bound.
func (s Set) Check() error {
	if s.Format != Format {
		return fmt.Errorf("%w: format %d, this agent reads format %d", ErrBad, s.Format, Format)
	}
	if len(s.Jobs) > MaxJobs {
		return fmt.Errorf("%w: %d jobs staged, over the limit of %d (prefetch stage drops the jobs registered since they were staged and those past their -ttl; the rest are not registered yet, or their job could not be read: remove one with prefetch stage -cancel JOB)", ErrBad, len(s.Jobs), MaxJobs)
	}
	seen := map[string]bool{}
	for _, j := range s.Jobs {
		if j.Namespace == "" || j.ID == "" {
			return fmt.Errorf("%w: a job with no namespace or ID", ErrBad)
		}
		if seen[j.Key()] {
			return fmt.Errorf("%w: job %s staged twice", ErrBad, clip(j.Key()))
		}
		seen[j.Key()] = true
		if err := j.Spec.check(); err != nil {
			return fmt.Errorf("%w: job %s: %w", ErrBad, clip(j.Key()), err)
		}
	}
	return nil
}

// With returns the set with job in it, in place of the same job staged
// before, and without the jobs that have expired at now.
func (s Set) With(job Job, now time.Time) Set {
	out := Set{Format: Format}
	for _, j := range s.Jobs {
		if j.Key() != job.Key() && !j.Expired(now) {
			out.Jobs = append(out.Jobs, j)
		}
	}
	out.Jobs = append(out.Jobs, job)
	return out
}

// Dropped is a job Prune took out of the set, and why.
type Dropped struct {
	Key, Why string
}

// Prune returns the set without the jobs whose stage is over: expired at
// now, or registered since they were staged (index, the job's
// JobModifyIndex as Nomad answers it now, 0 when there is no such job, is
// no longer Base: a job deregistered since is dropped too), and what it
// dropped. index is asked at most MaxJobs times, never for the job
// namespace/id keep (the one being staged or cancelled); a job it can't
// read (an error) stays.
func (s Set) Prune(now time.Time, keep string, index func(Job) (uint64, error)) (Set, []Dropped) {
	out := Set{Format: Format}
	var dropped []Dropped
	reads := 0
	for _, j := range s.Jobs {
		switch {
		case j.Key() == keep:
		case j.Expired(now):
			dropped = append(dropped, Dropped{j.Key(), "its -ttl passed"})
			continue
		case reads < MaxJobs:
			reads++
			i, err := index(j)
			switch {
			case err != nil, i == j.Base:
			case i == 0:
				dropped = append(dropped, Dropped{j.Key(), "deregistered since it was staged"})
				continue
			default:
				dropped = append(dropped, Dropped{j.Key(), "registered since it was staged"})
				continue
			}
		}
		out.Jobs = append(out.Jobs, j)
	}
	return out, dropped
}

// Without returns the set without the job namespace/id, and whether it was
// there.
func (s Set) Without(namespace, id string) (Set, bool) {
	out := Set{Format: Format}
	found := false
	for _, j := range s.Jobs {
		if j.Namespace == namespace && j.ID == id {
			found = true
			continue
		}
		out.Jobs = append(out.Jobs, j)
	}
	return out, found
}

// Find returns the staged job namespace/id.
func (s Set) Find(namespace, id string) (Job, bool) {
	i := slices.IndexFunc(s.Jobs, func(j Job) bool { return j.Namespace == namespace && j.ID == id })
	if i < 0 {
		return Job{}, false
	}
	return s.Jobs[i], true
}

// clip bounds a string a job submitter chose, for an error.
func clip(s string) string {
	if len(s) <= 200 {
		return s
	}
	return strings.ToValidUTF8(s[:200], "") + "..."
}
