package stage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

// maxRaces is how many times Update starts again when another writer
// changed the set between its read and its write.
const maxRaces = 5

// Read returns the staged set and its version (the variable's
// ModifyIndex; 0 when there is none yet). A set that does not decode is
// an ErrBad with that version.
func Read(ctx context.Context, c *nomad.Client, timeout time.Duration) (Set, uint64, error) {
	v, _, err := read(ctx, c, &api.QueryOptions{Namespace: Namespace}, timeout)
	if err != nil {
		return Set{}, 0, err
	}
	if v == nil {
		return Set{Format: Format}, 0, nil
	}
	s, err := decodeVar(v)
	return s, v.ModifyIndex, err
}

// Watch is Read blocking from index (when not 0) for at most wait: Nomad
// answers as soon as the variable is written (transcript A8 of the
// recordings). Its version is the variable's ModifyIndex, or Nomad's
// variables index while it does not exist, to block on next.
func Watch(ctx context.Context, c *nomad.Client, index uint64, wait, timeout time.Duration) (Set, uint64, error) {
	q := &api.QueryOptions{Namespace: Namespace}
	if index > 0 {
		q.WaitIndex, q.WaitTime = index, wait
		// Nomad may answer up to wait/16 past the wait (its jitter).
		timeout += wait + wait/16
	}
	v, qm, err := read(ctx, c, q, timeout)
	switch {
	case err != nil:
		return Set{}, 0, err
	case v == nil:
		return Set{Format: Format}, qm.LastIndex, nil
	}
	s, err := decodeVar(v)
	return s, v.ModifyIndex, err
}

func read(ctx context.Context, c *nomad.Client, q *api.QueryOptions, timeout time.Duration) (*api.Variable, *api.QueryMeta, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	v, qm, err := c.API().Variables().Peek(Path, nomad.Query(ctx, q))
	if err != nil {
		return nil, nil, accessError("reading", "read", nomad.Err(err))
	}
	return v, qm, nil
}

// decodeVar is the set variable v holds; no item is the empty set.
func decodeVar(v *api.Variable) (Set, error) {
	item, ok := v.Items[Item]
	if !ok {
		return Set{Format: Format}, nil
	}
	s, err := Decode(item)
	if err != nil {
		return Set{}, fmt.Errorf("variable %s (namespace %s, version %d): %w", Path, Namespace, v.ModifyIndex, err)
	}
	return s, nil
}

// Update reads the set, applies change to it and writes the result with a
// check-and-set on the version read, starting again (at most maxRaces
// times) when another writer was first. It returns the version written
// and the set as written. A set that does not decode is replaced only when
// change says so by not returning an error for Set{} (Read's error is
// passed to it as bad).
func Update(ctx context.Context, c *nomad.Client, timeout time.Duration, change func(s Set, bad error) (Set, error)) (uint64, Set, error) {
	for range maxRaces {
		s, version, err := Read(ctx, c, timeout)
		var bad error
		switch {
		case errors.Is(err, ErrBad):
			bad, s = err, Set{Format: Format}
		case err != nil:
			return 0, Set{}, err
		}
		next, err := change(s, bad)
		if err != nil {
			return 0, Set{}, err
		}
		item, err := next.Encode()
		if err != nil {
			return 0, Set{}, err
		}
		written, err := write(ctx, c, timeout, version, item)
		var conflict api.ErrCASConflict
		if errors.As(err, &conflict) {
			continue
		}
		if err != nil {
			return 0, Set{}, err
		}
		return written, next, nil
	}
	return 0, Set{}, fmt.Errorf("writing the staged set (variable %s, namespace %s): other writers changed it %d times in a row; try again", Path, Namespace, maxRaces)
}

// write replaces the variable if its ModifyIndex is still version (0: if
// it does not exist), and returns the new ModifyIndex.
func write(ctx context.Context, c *nomad.Client, timeout time.Duration, version uint64, item string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	v := &api.Variable{Namespace: Namespace, Path: Path, Items: api.VariableItems{Item: item}, ModifyIndex: version}
	wo := (&api.WriteOptions{Namespace: Namespace}).WithContext(ctx)
	var out *api.Variable
	var err error
	if version == 0 {
		out, _, err = c.API().Variables().CheckedCreate(v, wo)
	} else {
		out, _, err = c.API().Variables().CheckedUpdate(v, wo)
	}
	var conflict api.ErrCASConflict
	if errors.As(err, &conflict) {
		return 0, err
	}
	if err != nil {
		return 0, accessError("writing", "write", nomad.Err(err))
	}
	return out.ModifyIndex, nil
}

// accessError names the variable, and for a refusal the capability the
// token lacks.
func accessError(doing, capability string, err error) error {
	if errors.Is(err, nomad.ErrRefused) {
		return fmt.Errorf("%s the staged set: the token may not %s variable %s in namespace %s (it needs the variables capability %q on that path: prefetch-policy.hcl for the agents, prefetch-stage-policy.hcl for stagers): %w", doing, capability, Path, Namespace, capability, err)
	}
	return fmt.Errorf("%s the staged set (variable %s, namespace %s): %w", doing, Path, Namespace, err)
}
