package nomadtest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Nomad's variables with their locks (/v1/var/:path, Nomad >= 1.7), as a
// real Nomad 2.0.5 answered them request by request
// (testdata/nomad-2.0.5/transcripts/A1..A8; conform_test.go replays them
// against this fake and compares every answer). A comment names the
// scenario a behaviour comes from; "Nomad's source, not recorded" marks the
// few the recording does not show (bounds of the TTL, a missing variable,
// a malformed cas, an empty write), kept because a test needs an answer.
//
//   - PUT ?lock-acquire: the acquire's Items replace the variable's, and an
//     acquire without Items leaves none (A2, A6); 200 with the variable and
//     the lock's server-made ID. Held by another (any body): 409 with the
//     zero variable as text/plain (A3). The holder with its own ID: 200,
//     the same lock (A3). ?cas= with an acquire: 400 (A6).
//   - The lock lapses twice its TTL after the acquire or the last renewal
//     and is removed once the acquire's lock delay has passed, keeping the
//     Items (A6: free about 23 s after an acquire of TTL 10 s, delay 3 s).
//   - PUT ?lock-renew: 200 with metadata and Lock, no Items and no
//     X-Nomad-Index; the errors of A5.
//   - PUT ?lock-release: 200 without Items or Lock, ModifyTime kept (A2);
//     the errors of A7.
//   - PUT (a plain write, ?cas=N or not): a locked variable takes it only
//     from its holder, whose Lock then reads the default TTL and LockDelay
//     (A4); a stale cas is a 409 with the current variable (A4).
//   - DELETE: 409 while locked, else 204 (A7).
//   - GET: the variable with its Items and Lock, X-Nomad-Index its
//     ModifyIndex; ?index=N&wait=D blocks until the ModifyIndex passes N, at
//     most D (A8). A missing variable: 404 with the table's index (A2, A7),
//     at once when N is below the table's index, after the wait (or a
//     change) when it is not (var-missing-blocking.txt). With
//     ManagementToken set (ACLs on) the Lock is shown to that token only
//     (var-lock-read-acl.txt).
//
// Every write takes the next raft index, shared with the event stream's
// frames, and so does a refused write (A3, A4, A7), as in Nomad.

// fakeVar is one stored variable.
type fakeVar struct {
	ns, path                 string
	items                    map[string]string
	createIndex, modifyIndex uint64
	createTime, modifyTime   int64
	lock                     *fakeLock
}

// fakeLock is a variable's lock and Nomad's timers for it.
type fakeLock struct {
	id         string
	ttl, delay time.Duration // as the variable holds and shows them
	lapseDelay time.Duration // the delay armed at the acquire, applied once the TTL lapses
	expires    time.Time     // the TTL timer: twice the TTL after the acquire or the last renewal
	lapsed     bool          // the timer fired: renewals are refused
	timer      *time.Timer
}

// varJSON is a variable as Nomad encodes it (the recorded field order).
type varJSON struct {
	CreateIndex uint64            `json:"CreateIndex"`
	CreateTime  int64             `json:"CreateTime"`
	Items       map[string]string `json:"Items,omitempty"`
	Lock        *lockJSON         `json:"Lock,omitempty"`
	ModifyIndex uint64            `json:"ModifyIndex"`
	ModifyTime  int64             `json:"ModifyTime"`
	Namespace   string            `json:"Namespace"`
	Path        string            `json:"Path"`
}

type lockJSON struct {
	TTL       string `json:"TTL,omitempty"`
	LockDelay string `json:"LockDelay,omitempty"`
	ID        string `json:"ID,omitempty"`
}

// varRequest is the body of a PUT.
type varRequest struct {
	Namespace string
	Path      string
	Items     map[string]string
	Lock      *lockJSON
}

// VarOp records one variable request and its answer.
type VarOp struct {
	Op     string // "read", "write", "lock-acquire", "lock-renew", "lock-release"
	Path   string
	Token  string
	LockID string // the lock ID the request carried or, for an acquire, got
	Status int
}

// VarState is a variable as a test sees it.
type VarState struct {
	Items       map[string]string
	ModifyIndex uint64
	LockID      string // "" when not locked
	TTL         time.Duration
	LockDelay   time.Duration
	Lapsed      bool      // the TTL lapsed; the lock goes once its delay has passed
	Expires     time.Time // when the TTL timer lapses unless renewed (twice the TTL)
}

func varKey(ns, path string) string { return ns + "\x00" + path }

// Variable returns the variable at path in the default namespace.
func (s *Server) Variable(path string) (VarState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.vars[varKey("default", path)]
	if !ok {
		return VarState{}, false
	}
	st := VarState{Items: maps.Clone(v.items), ModifyIndex: v.modifyIndex}
	if l := v.lock; l != nil {
		st.LockID, st.TTL, st.LockDelay, st.Lapsed, st.Expires = l.id, l.ttl, l.delay, l.lapsed, l.expires
	}
	return st, true
}

// VarOps returns the variable requests answered so far.
func (s *Server) VarOps() []VarOp {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.varOps)
}

// LapseLock makes the lock at path lapse now, as if its holder had not
// renewed it for twice its TTL: renewals are refused from now on, and the
// lock is removed once its lock delay has passed.
func (s *Server) LapseLock(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.vars[varKey("default", path)]
	if !ok || v.lock == nil || v.lock.lapsed {
		return
	}
	v.lock.expires = time.Now()
	s.advanceLock(v, time.Now())
}

// Partition freezes everything of the caller holding token, as a network
// partition between it and Nomad would: its open event streams stop
// writing (TCP stays open), and its new requests of any kind are held
// unanswered; a held request whose caller gives up was never received.
// Heal ends it: the streams go on, the held requests are served.
func (s *Server) Partition(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.partitioned[token] = true
	s.broadcast()
}

// Heal ends the partition of token.
func (s *Server) Heal(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.partitioned, token)
	s.broadcast()
}

// waitPartition holds a request of token while it is partitioned; false:
// the caller gave up or the server closed meanwhile.
func (s *Server) waitPartition(r *http.Request, token string) bool {
	for {
		s.mu.Lock()
		blocked, closed, changed := s.partitioned[token], s.closed, s.changed
		s.mu.Unlock()
		switch {
		case closed:
			return false
		case !blocked:
			return true
		}
		select {
		case <-changed:
		case <-r.Context().Done():
			return false
		}
	}
}

// answerText writes a text answer as Nomad does (text/plain, no newline);
// index "" sends no X-Nomad-Index.
func answerText(w http.ResponseWriter, code int, index, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if index != "" {
		w.Header().Set("X-Nomad-Index", index)
	}
	w.WriteHeader(code)
	_, _ = io.WriteString(w, text)
}

// rpcError writes the form Nomad's 400s take, "RPC Error:: 400,..." (A4
// has it twice, A7 once: prefixes gives how many).
func rpcError(w http.ResponseWriter, code, prefixes int, msg string) {
	answerText(w, code, "0", strings.Repeat(fmt.Sprintf("RPC Error:: %d,", code), prefixes)+msg)
}

// conflictJSON writes a refused write's 409: a variable as JSON, sent as
// text/plain, as Nomad does.
func conflictJSON(w http.ResponseWriter, index string, v varJSON) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	answerText(w, http.StatusConflict, index, string(b))
}

// writeJSON writes v as Nomad does, compact and without a newline; index 0
// sends no X-Nomad-Index.
func writeJSON(w http.ResponseWriter, code int, index uint64, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	w.Header().Set("Content-Type", "application/json")
	if index > 0 {
		w.Header().Set("X-Nomad-Index", strconv.FormatUint(index, 10))
	}
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// queryMeta sets the headers Nomad's reads carry besides X-Nomad-Index.
func queryMeta(w http.ResponseWriter) {
	w.Header().Set("X-Nomad-Knownleader", "true")
	w.Header().Set("X-Nomad-Lastcontact", "0")
}

// handleVar serves /v1/var/:path.
func (s *Server) handleVar(w http.ResponseWriter, r *http.Request) {
	token := requestToken(r)
	if !s.waitPartition(r, token) {
		return
	}
	if s.failing(w) {
		return
	}
	path := strings.Trim(strings.TrimPrefix(r.URL.Path, "/v1/var/"), "/")
	q := r.URL.Query()
	ns := q.Get("namespace")
	if ns == "" {
		ns = "default"
	}
	op := putOp(q)
	switch r.Method {
	case http.MethodGet:
		op = "read"
	case http.MethodDelete:
		op = "delete"
	}
	rec := VarOp{Op: op, Path: path, Token: token}
	defer func() {
		s.mu.Lock()
		s.varOps = append(s.varOps, rec)
		s.mu.Unlock()
	}()
	status := func(code int) { rec.Status = code }
	if s.opts.Authorize != nil && !s.opts.Authorize(token) {
		// E: a refused read has no X-Nomad-Index, a refused PUT (an
		// acquire, a plain write) has X-Nomad-Index 0.
		index := ""
		if r.Method == http.MethodPut || r.Method == http.MethodPost {
			index = "0"
		}
		status(http.StatusForbidden)
		answerText(w, http.StatusForbidden, index, "Permission denied")
		return
	}
	switch r.Method {
	case http.MethodGet:
		status(s.readVar(w, r, ns, path))
	case http.MethodDelete:
		status(s.deleteVar(w, q, ns, path))
	case http.MethodPut, http.MethodPost:
		var body varRequest
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil && err != io.EOF {
			status(http.StatusBadRequest)
			answerText(w, http.StatusBadRequest, "", "failed to parse request: "+err.Error())
			return
		}
		if body.Lock != nil {
			rec.LockID = body.Lock.ID
		}
		status(s.putVar(w, q, ns, path, op, body, &rec.LockID))
	default:
		status(http.StatusMethodNotAllowed)
		answerText(w, http.StatusMethodNotAllowed, "", "Invalid method")
	}
}

func putOp(q map[string][]string) string {
	for _, op := range []string{"lock-acquire", "lock-renew", "lock-release"} {
		if _, ok := q[op]; ok {
			return op
		}
	}
	return "write"
}

// readVar answers a GET, blocking while ?index=N is the variable's
// ModifyIndex.
func (s *Server) readVar(w http.ResponseWriter, r *http.Request, ns, path string) int {
	q := r.URL.Query()
	after, _ := strconv.ParseUint(q.Get("index"), 10, 64)
	wait := 5 * time.Minute // Nomad's default, and its cap is 10 minutes
	if d, err := time.ParseDuration(q.Get("wait")); err == nil && d > 0 {
		wait = min(d, 10*time.Minute)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		s.mu.Lock()
		v, ok := s.vars[varKey(ns, path)]
		if ok {
			s.advanceLock(v, time.Now())
		}
		closed, changed, table := s.closed, s.changed, s.varIndex
		// A variable answers once its ModifyIndex passes ?index; a missing
		// one answers at once below the variables' table index, and blocks
		// from it on (var-missing-blocking.txt).
		answer := closed || after == 0 || (ok && v.modifyIndex > after) || (!ok && after < table)
		if answer {
			var out varJSON
			if ok {
				out = s.encodeVar(v, true, true)
				if s.opts.ManagementToken != "" && requestToken(r) != s.opts.ManagementToken {
					// With ACLs, Nomad shows a lock to a management token
					// only (testdata/nomad-2.0.5/var-lock-read-acl.txt).
					out.Lock = nil
				}
			}
			s.mu.Unlock()
			queryMeta(w)
			if !ok {
				// A2, A7: the variables' table index.
				answerText(w, http.StatusNotFound, strconv.FormatUint(table, 10), "variable not found")
				return http.StatusNotFound
			}
			writeJSON(w, http.StatusOK, out.ModifyIndex, out)
			return http.StatusOK
		}
		s.mu.Unlock()
		select {
		case <-changed:
		case <-timer.C:
			after = 0 // answer what is there
		case <-r.Context().Done():
			return 0
		}
	}
}

// putVar applies a PUT and writes its answer; it returns the status.
func (s *Server) putVar(w http.ResponseWriter, q map[string][]string, ns, path, op string, body varRequest, lockID *string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vars[varKey(ns, path)]
	if v != nil {
		s.advanceLock(v, time.Now())
	}
	switch op {
	case "lock-acquire":
		if _, ok := q["cas"]; ok { // A6: held or free, right or stale
			answerText(w, http.StatusBadRequest, "", "CAS can't be used with lock operations")
			return http.StatusBadRequest
		}
		return s.acquire(w, ns, path, v, body, lockID)
	case "lock-renew":
		return s.renew(w, v, body)
	case "lock-release":
		return s.release(w, ns, path, v, body)
	}
	return s.write(w, q, ns, path, v, body)
}

func (s *Server) acquire(w http.ResponseWriter, ns, path string, v *fakeVar, body varRequest, lockID *string) int {
	ttl, delay := s.opts.DefaultLockTTL, s.opts.DefaultLockDelay
	if body.Lock != nil {
		for _, f := range []struct {
			s string
			d *time.Duration
		}{{body.Lock.TTL, &ttl}, {body.Lock.LockDelay, &delay}} {
			if f.s == "" {
				continue
			}
			d, err := time.ParseDuration(f.s)
			if err != nil {
				answerText(w, http.StatusBadRequest, "", "failed to parse request: "+err.Error())
				return http.StatusBadRequest
			}
			*f.d = d
		}
	}
	// Nomad's source, not recorded: the TTL's bounds.
	if ttl < 0 || delay < 0 {
		rpcError(w, http.StatusBadRequest, 2, "Lock delay and TTL must be positive")
		return http.StatusBadRequest
	}
	if ttl == 0 { // Nomad takes 0 for "not given"
		ttl = s.opts.DefaultLockTTL
	}
	if delay == 0 {
		delay = s.opts.DefaultLockDelay
	}
	if ttl < s.opts.MinLockTTL || ttl > 24*time.Hour {
		rpcError(w, http.StatusBadRequest, 2, "TTL must be between "+spelled(s.opts.MinLockTTL)+" and 24 hours")
		return http.StatusBadRequest
	}
	held := v != nil && v.lock != nil
	if held && (body.Lock == nil || body.Lock.ID != v.lock.id) {
		// A3: held by another, with or without Items, or an empty body;
		// the refusal takes a raft index all the same.
		s.burnIndex()
		conflictJSON(w, "", varJSON{Namespace: ns, Path: path})
		return http.StatusConflict
	}
	if v == nil {
		v = &fakeVar{ns: ns, path: path}
		s.vars[varKey(ns, path)] = v
	}
	// A2, A6: the acquire's Items replace the variable's, and an acquire
	// without Items leaves none.
	v.items = maps.Clone(body.Items)
	if held {
		// A3: the holder again, with its own ID: the same lock, its TTL
		// and LockDelay as asked (the defaults when not given).
		v.lock.ttl, v.lock.delay, v.lock.lapseDelay = ttl, delay, delay
		v.lock.expires = time.Now().Add(2 * ttl)
	} else {
		v.lock = &fakeLock{id: newUUID(), ttl: ttl, delay: delay, lapseDelay: delay, expires: time.Now().Add(2 * ttl)}
	}
	*lockID = v.lock.id
	s.modified(v, true)
	s.armLock(v)
	out := s.encodeVar(v, true, true)
	writeJSON(w, http.StatusOK, out.ModifyIndex, out)
	return http.StatusOK
}

func (s *Server) renew(w http.ResponseWriter, v *fakeVar, body varRequest) int {
	switch {
	case body.Lock == nil || body.Lock.ID == "": // A5
		answerText(w, http.StatusInternalServerError, "", "1 error occurred:\n\t* missing lock ID\n\n")
		return http.StatusInternalServerError
	case v == nil: // Nomad's source, not recorded
		answerText(w, http.StatusNotFound, "", "variable doesn't exist")
		return http.StatusNotFound
	case v.lock == nil: // A5, after release
		answerText(w, http.StatusConflict, "", "variable doesn't hold a lock")
		return http.StatusConflict
	case body.Lock.ID != v.lock.id, v.lock.lapsed: // A5; lapsed: Nomad's source
		answerText(w, http.StatusConflict, "", "attempting to modify locked variable")
		return http.StatusConflict
	}
	v.lock.expires = time.Now().Add(2 * v.lock.ttl)
	s.armLock(v)
	writeJSON(w, http.StatusOK, 0, s.encodeVar(v, false, true)) // A5: no index, no Items
	return http.StatusOK
}

func (s *Server) release(w http.ResponseWriter, ns, path string, v *fakeVar, body varRequest) int {
	switch {
	case len(body.Items) > 0: // A7
		rpcError(w, http.StatusBadRequest, 1, "lock release operation doesn't take variable items")
		return http.StatusBadRequest
	case v == nil: // Nomad's source, not recorded
		answerText(w, http.StatusNotFound, "", "variable doesn't exist")
		return http.StatusNotFound
	case v.lock == nil: // A7: nothing held
		s.burnIndex()
		answerText(w, http.StatusInternalServerError, "0", "variable doesn't hold a lock")
		return http.StatusInternalServerError
	case body.Lock == nil || body.Lock.ID != v.lock.id: // A7: a wrong ID
		s.burnIndex()
		conflictJSON(w, "", varJSON{Namespace: ns, Path: path})
		return http.StatusConflict
	}
	s.unlock(v)
	writeJSON(w, http.StatusOK, v.modifyIndex, s.encodeVar(v, false, false)) // A2: neither Items nor Lock
	return http.StatusOK
}

// spelled is d as Nomad's TTL error spells its bound, "10 seconds".
func spelled(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%d seconds", d/time.Second)
	}
	return d.String()
}

// casConflict checks ?cas=N against v (s.mu held): 0 when it holds or is
// not asked, else the status written.
func (s *Server) casConflict(w http.ResponseWriter, q map[string][]string, ns, path string, v *fakeVar) int {
	cas, ok := q["cas"]
	if !ok {
		return 0
	}
	n, err := strconv.ParseUint(strings.Join(cas, ""), 10, 64)
	switch {
	case err != nil: // Nomad's source, not recorded
		answerText(w, http.StatusBadRequest, "", "failed to parse cas: "+err.Error())
		return http.StatusBadRequest
	case v == nil && n != 0: // Nomad's source, not recorded
		s.burnIndex()
		conflictJSON(w, "0", varJSON{Namespace: ns, Path: path})
		return http.StatusConflict
	case v != nil && n != v.modifyIndex:
		// A4: the current variable, its index in X-Nomad-Index.
		s.burnIndex()
		conflictJSON(w, strconv.FormatUint(v.modifyIndex, 10), s.encodeVar(v, true, true))
		return http.StatusConflict
	}
	return 0
}

// write is a plain PUT, with or without ?cas.
func (s *Server) write(w http.ResponseWriter, q map[string][]string, ns, path string, v *fakeVar, body varRequest) int {
	if body.Lock != nil && (body.Lock.TTL != "" || body.Lock.LockDelay != "") { // A4
		rpcError(w, http.StatusBadRequest, 2, "variable should not contain lock definition")
		return http.StatusBadRequest
	}
	if len(body.Items) == 0 { // Nomad's source, not recorded
		rpcError(w, http.StatusBadRequest, 2, "empty variables are invalid")
		return http.StatusBadRequest
	}
	id := ""
	if body.Lock != nil {
		id = body.Lock.ID
	}
	switch {
	case v != nil && v.lock != nil && id != v.lock.id:
		// A4: a locked variable takes writes from its holder only, cas or
		// not; the refusal is the zero variable, X-Nomad-Index 0.
		s.burnIndex()
		conflictJSON(w, "0", varJSON{Namespace: ns, Path: path})
		return http.StatusConflict
	case id != "" && (v == nil || v.lock == nil): // Nomad's source, not recorded
		answerText(w, http.StatusConflict, "", "variable doesn't hold a lock")
		return http.StatusConflict
	}
	if code := s.casConflict(w, q, ns, path, v); code != 0 {
		return code
	}
	if v == nil {
		v = &fakeVar{ns: ns, path: path}
		s.vars[varKey(ns, path)] = v
	}
	v.items = maps.Clone(body.Items)
	if v.lock != nil { // A4: Nomad fills the lock's settings in again, with its defaults
		v.lock.ttl, v.lock.delay = s.opts.DefaultLockTTL, s.opts.DefaultLockDelay
	}
	s.modified(v, true)
	writeJSON(w, http.StatusOK, v.modifyIndex, s.encodeVar(v, true, v.lock != nil))
	return http.StatusOK
}

// deleteVar is a DELETE, with or without ?cas.
func (s *Server) deleteVar(w http.ResponseWriter, q map[string][]string, ns, path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vars[varKey(ns, path)]
	if v != nil {
		s.advanceLock(v, time.Now())
	}
	if v != nil && v.lock != nil { // A7: plain or with the right cas
		s.burnIndex()
		conflictJSON(w, "0", varJSON{Namespace: ns, Path: path})
		return http.StatusConflict
	}
	if code := s.casConflict(w, q, ns, path, v); code != 0 {
		return code
	}
	delete(s.vars, varKey(ns, path))
	s.burnIndex()
	s.varIndex = s.nextIndex - 1
	// A7: 204, no body, no Content-Type, the delete's index.
	w.Header().Set("X-Nomad-Index", strconv.FormatUint(s.varIndex, 10))
	w.WriteHeader(http.StatusNoContent)
	return http.StatusNoContent
}

// burnIndex takes a raft index for a refused write, as Nomad does (A3, A4,
// A7); s.mu is held.
func (s *Server) burnIndex() {
	s.nextIndex++
}

// modified stamps v with the next raft index, and with now as its
// ModifyTime if stamp (a release keeps the acquire's, A2, A6); s.mu is held.
func (s *Server) modified(v *fakeVar, stamp bool) {
	idx := s.nextIndex
	s.nextIndex++
	s.varIndex = idx
	// Strictly increasing, as Nomad's wall clock is between two writes;
	// synctest's clock stands still between them.
	now := max(time.Now().UnixNano(), s.lastVarTime+1)
	if v.createIndex == 0 {
		v.createIndex, v.createTime = idx, now
	}
	v.modifyIndex = idx
	if stamp || v.modifyTime == 0 {
		v.modifyTime, s.lastVarTime = now, now
	}
	s.broadcast()
}

// unlock removes v's lock; s.mu is held.
func (s *Server) unlock(v *fakeVar) {
	if v.lock.timer != nil {
		v.lock.timer.Stop()
	}
	v.lock = nil
	s.modified(v, false)
}

// advanceLock applies Nomad's timers to v's lock at now; s.mu is held.
func (s *Server) advanceLock(v *fakeVar, now time.Time) {
	l := v.lock
	if l == nil {
		return
	}
	if !l.lapsed && !now.Before(l.expires) {
		l.lapsed = true
	}
	if l.lapsed && !now.Before(l.expires.Add(l.lapseDelay)) {
		s.unlock(v)
		return
	}
	s.armLock(v)
}

// armLock sets the timer that applies v's lock's next step when nobody
// asks; s.mu is held.
func (s *Server) armLock(v *fakeVar) {
	l := v.lock
	if l.timer != nil {
		l.timer.Stop()
	}
	at := l.expires
	if l.lapsed {
		at = l.expires.Add(l.lapseDelay)
	}
	id := l.id
	l.timer = time.AfterFunc(time.Until(at), func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if v.lock != nil && v.lock.id == id && !s.closed {
			s.advanceLock(v, time.Now())
		}
	})
}

// encodeVar renders v; s.mu is held.
func (s *Server) encodeVar(v *fakeVar, items, lock bool) varJSON {
	out := varJSON{CreateIndex: v.createIndex, CreateTime: v.createTime, ModifyIndex: v.modifyIndex,
		ModifyTime: v.modifyTime, Namespace: v.ns, Path: v.path}
	if items {
		out.Items = maps.Clone(v.items)
	}
	if lock && v.lock != nil {
		out.Lock = &lockJSON{TTL: v.lock.ttl.String(), LockDelay: v.lock.delay.String(), ID: v.lock.id}
	}
	return out
}

// newUUID is a UUID-shaped random ID, as Nomad's lock and evaluation IDs.
func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// stopLockTimers stops every lock's timer; s.mu is held.
func (s *Server) stopLockTimers() {
	for _, v := range s.vars {
		if v.lock != nil && v.lock.timer != nil {
			v.lock.timer.Stop()
		}
	}
}
