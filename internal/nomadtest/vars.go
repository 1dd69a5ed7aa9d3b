package nomadtest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Nomad's variables with their locks (/v1/var/:path, Nomad ≥ 1.7), as the
// answers recorded from Nomad 2.0.5 (testdata/nomad-2.0.5) show them and as
// Nomad's source describes what the recording cannot show:
//
//   - PUT ?lock-acquire: 200 with the lock's ID; while the variable holds a
//     lock (even one whose TTL lapsed, during its lock delay), 409 with an
//     empty variable. Items in the request replace the variable's; without
//     them its items are kept. The answer's Items are the request's. A TTL
//     below Options.MinLockTTL (Nomad: 10 s) or above 24 h is a 400.
//   - PUT ?lock-renew with {"Lock":{"ID":...}}: 200 with the metadata and the
//     lock, no Items. Nomad's TTL timer runs for twice the TTL: a lock not
//     renewed within 2 × TTL lapses, a renewal is then refused (409), and
//     the lock is removed from the variable once the lock delay armed at the
//     acquire has passed; only then can another caller acquire it. A renewal
//     re-arms the timer with twice the TTL the variable holds now.
//   - PUT ?cas=N (a plain write): a locked variable takes it only with the
//     holder's lock ID and nothing else in Lock (a TTL or LockDelay there is
//     a 400), and then shows TTL and LockDelay reset to the defaults
//     (Options.DefaultLockTTL and DefaultLockDelay; Nomad: 15 s each),
//     whatever the acquire asked; without the ID, 409. A CAS index that is
//     not the variable's ModifyIndex is a 409 with the variable.
//   - PUT ?lock-release with the lock ID and no Items: 200, the variable
//     without its lock; with Items, 400.
//   - GET: the variable with its Items and Lock (ACLs off, as recorded; with
//     HideVarLocks, without the Lock, as Nomad answers a token without
//     management rights), X-Nomad-Index its ModifyIndex; ?index=N&wait=D
//     blocks until the ModifyIndex passes N, at most D.
//
// Every write takes the next raft index, shared with the event stream's
// frames as in Nomad (a variable write leaves a hole in the indexes the
// stream's subscribers see). Error bodies take the one form recorded,
// "RPC Error:: CODE,RPC Error:: CODE,message".

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

// rpcError writes a Nomad RPC error in the recorded form (no newline).
func rpcError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintf(w, "RPC Error:: %d,RPC Error:: %d,%s", code, code, msg)
}

// writeJSON writes v as Nomad does, compact and without a newline.
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

// handleVar serves /v1/var/:path.
func (s *Server) handleVar(w http.ResponseWriter, r *http.Request) {
	token := requestToken(r)
	if !s.waitPartition(r, token) {
		return
	}
	path := strings.Trim(strings.TrimPrefix(r.URL.Path, "/v1/var/"), "/")
	q := r.URL.Query()
	ns := q.Get("namespace")
	if ns == "" {
		ns = "default"
	}
	op := putOp(q)
	if r.Method == http.MethodGet {
		op = "read"
	}
	rec := VarOp{Op: op, Path: path, Token: token}
	defer func() {
		s.mu.Lock()
		s.varOps = append(s.varOps, rec)
		s.mu.Unlock()
	}()
	status := func(code int) { rec.Status = code }
	if s.opts.Authorize != nil && !s.opts.Authorize(token) {
		status(http.StatusForbidden)
		http.Error(w, "Permission denied", http.StatusForbidden)
		return
	}
	switch r.Method {
	case http.MethodGet:
		status(s.readVar(w, r, ns, path))
	case http.MethodPut, http.MethodPost:
		var body varRequest
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			status(http.StatusBadRequest)
			rpcError(w, http.StatusBadRequest, "failed to parse request: "+err.Error())
			return
		}
		if body.Lock != nil {
			rec.LockID = body.Lock.ID
		}
		status(s.putVar(w, q, ns, path, op, body, &rec.LockID))
	default:
		status(http.StatusMethodNotAllowed)
		http.Error(w, "Invalid method", http.StatusMethodNotAllowed)
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
		closed, changed := s.closed, s.changed
		if !ok || closed || after == 0 || v.modifyIndex > after {
			var out varJSON
			if ok {
				out = s.encodeVar(v, true, !s.opts.HideVarLocks)
			}
			s.mu.Unlock()
			if !ok {
				rpcError(w, http.StatusNotFound, "variable not found")
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
	now := time.Now()
	v := s.vars[varKey(ns, path)]
	if v != nil {
		s.advanceLock(v, now)
	}
	switch op {
	case "lock-acquire":
		return s.acquire(w, ns, path, v, body, lockID)
	case "lock-renew":
		return s.renew(w, v, body)
	case "lock-release":
		return s.release(w, v, body)
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
				rpcError(w, http.StatusBadRequest, "failed to parse request: "+err.Error())
				return http.StatusBadRequest
			}
			*f.d = d
		}
	}
	if ttl < 0 || delay < 0 {
		rpcError(w, http.StatusBadRequest, "Lock delay and TTL must be positive")
		return http.StatusBadRequest
	}
	if ttl == 0 { // Nomad takes 0 for "not given"
		ttl = s.opts.DefaultLockTTL
	}
	if delay == 0 {
		delay = s.opts.DefaultLockDelay
	}
	if ttl < s.opts.MinLockTTL || ttl > 24*time.Hour {
		rpcError(w, http.StatusBadRequest, "TTL must be between "+spelled(s.opts.MinLockTTL)+" and 24 hours")
		return http.StatusBadRequest
	}
	if v != nil && v.lock != nil {
		writeJSON(w, http.StatusConflict, 0, varJSON{Namespace: ns, Path: path})
		return http.StatusConflict
	}
	if v == nil {
		v = &fakeVar{ns: ns, path: path, items: map[string]string{}}
		s.vars[varKey(ns, path)] = v
	}
	if len(body.Items) > 0 {
		v.items = maps.Clone(body.Items)
	}
	v.lock = &fakeLock{id: newLockID(), ttl: ttl, delay: delay, lapseDelay: delay, expires: time.Now().Add(2 * ttl)}
	*lockID = v.lock.id
	s.modified(v)
	s.armLock(v)
	out := s.encodeVar(v, false, true)
	out.Items = maps.Clone(body.Items) // the answer carries the request's items
	if out.Items == nil {
		out.Items = map[string]string{}
	}
	writeJSON(w, http.StatusOK, out.ModifyIndex, out)
	return http.StatusOK
}

func (s *Server) renew(w http.ResponseWriter, v *fakeVar, body varRequest) int {
	if code, msg := s.checkHolder(v, body); code != 0 {
		rpcError(w, code, msg)
		return code
	}
	if v.lock.lapsed {
		rpcError(w, http.StatusConflict, "attempting to modify locked variable")
		return http.StatusConflict
	}
	v.lock.expires = time.Now().Add(2 * v.lock.ttl)
	s.armLock(v)
	writeJSON(w, http.StatusOK, v.modifyIndex, s.encodeVar(v, false, true))
	return http.StatusOK
}

func (s *Server) release(w http.ResponseWriter, v *fakeVar, body varRequest) int {
	if len(body.Items) > 0 {
		rpcError(w, http.StatusBadRequest, "lock release operation doesn't take variable items")
		return http.StatusBadRequest
	}
	if body.Lock == nil || body.Lock.ID == "" {
		rpcError(w, http.StatusBadRequest, "release requires all lock information")
		return http.StatusBadRequest
	}
	if code, msg := s.checkHolder(v, body); code != 0 {
		rpcError(w, code, msg)
		return code
	}
	s.unlock(v)
	writeJSON(w, http.StatusOK, v.modifyIndex, s.encodeVar(v, false, false))
	return http.StatusOK
}

// spelled is d as Nomad's TTL error spells its bound, "10 seconds".
func spelled(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%d seconds", d/time.Second)
	}
	return d.String()
}

// checkHolder checks that body carries the lock ID v holds.
func (s *Server) checkHolder(v *fakeVar, body varRequest) (int, string) {
	switch {
	case v == nil:
		return http.StatusNotFound, "variable doesn't exist"
	case v.lock == nil:
		return http.StatusConflict, "variable doesn't hold a lock"
	case body.Lock == nil || body.Lock.ID != v.lock.id:
		return http.StatusConflict, "attempting to modify locked variable"
	}
	return 0, ""
}

// write is a plain PUT, with or without ?cas.
func (s *Server) write(w http.ResponseWriter, q map[string][]string, ns, path string, v *fakeVar, body varRequest) int {
	if body.Lock != nil && (body.Lock.TTL != "" || body.Lock.LockDelay != "") {
		rpcError(w, http.StatusBadRequest, "variable should not contain lock definition")
		return http.StatusBadRequest
	}
	if len(body.Items) == 0 {
		rpcError(w, http.StatusBadRequest, "empty variables are invalid")
		return http.StatusBadRequest
	}
	conflict := func() int {
		out := varJSON{Namespace: ns, Path: path}
		if v != nil {
			out = s.encodeVar(v, true, false)
		}
		writeJSON(w, http.StatusConflict, 0, out)
		return http.StatusConflict
	}
	if cas, ok := q["cas"]; ok {
		n, err := strconv.ParseUint(strings.Join(cas, ""), 10, 64)
		switch {
		case err != nil:
			rpcError(w, http.StatusBadRequest, "failed to parse cas: "+err.Error())
			return http.StatusBadRequest
		case v == nil && n != 0, v != nil && n != v.modifyIndex:
			return conflict()
		}
	}
	id := ""
	if body.Lock != nil {
		id = body.Lock.ID
	}
	switch {
	case v != nil && v.lock != nil && id != v.lock.id:
		return conflict() // a locked variable takes writes from its holder only
	case id != "" && (v == nil || v.lock == nil):
		rpcError(w, http.StatusConflict, "variable doesn't hold a lock")
		return http.StatusConflict
	}
	if v == nil {
		v = &fakeVar{ns: ns, path: path}
		s.vars[varKey(ns, path)] = v
	}
	v.items = maps.Clone(body.Items)
	if v.lock != nil { // Nomad fills the lock's settings in again, with its defaults
		v.lock.ttl, v.lock.delay = s.opts.DefaultLockTTL, s.opts.DefaultLockDelay
	}
	s.modified(v)
	writeJSON(w, http.StatusOK, v.modifyIndex, s.encodeVar(v, true, v.lock != nil))
	return http.StatusOK
}

// modified stamps v with the next raft index; s.mu is held.
func (s *Server) modified(v *fakeVar) {
	idx := s.nextIndex
	s.nextIndex++
	now := time.Now().UnixNano()
	if v.createIndex == 0 {
		v.createIndex, v.createTime = idx, now
	}
	v.modifyIndex, v.modifyTime = idx, now
	s.broadcast()
}

// unlock removes v's lock; s.mu is held.
func (s *Server) unlock(v *fakeVar) {
	if v.lock.timer != nil {
		v.lock.timer.Stop()
	}
	v.lock = nil
	s.modified(v)
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

// newLockID is a UUID-shaped random ID, as Nomad's.
func newLockID() string {
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
