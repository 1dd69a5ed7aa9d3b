package jobs

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// store is the versioned data behind the fake Consul and Nomad servers: a
// raft-like index that every write bumps, and a channel closed on each
// write, for blocking queries.
type store struct {
	mu      sync.Mutex
	index   uint64
	changed chan struct{}
	kv      map[string]kvEntry
	unknown []string // requests neither fake serves
}

type kvEntry struct {
	value                    string
	createIndex, modifyIndex uint64
}

func newStore() *store {
	return &store{index: 1, changed: make(chan struct{}), kv: map[string]kvEntry{}}
}

// put writes key (a Consul key, or a Nomad variable's path joined to an
// item key with "\x00") and wakes blocked queries.
func (s *store) put(key, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index++
	e, ok := s.kv[key]
	if !ok {
		e.createIndex = s.index
	}
	e.value, e.modifyIndex = value, s.index
	s.kv[key] = e
	close(s.changed)
	s.changed = make(chan struct{})
}

// block implements a blocking query's wait: while the caller's index is
// the current one, wait for a write, the query's wait time or the client's
// going away. It returns the current index.
func (s *store) block(r *http.Request) uint64 {
	q := r.URL.Query()
	want, _ := strconv.ParseUint(q.Get("index"), 10, 64)
	wait := 5 * time.Minute // Consul's and Nomad's default
	if w := q.Get("wait"); w != "" {
		if d, err := time.ParseDuration(w); err == nil && d < wait {
			wait = d
		}
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		s.mu.Lock()
		index, changed := s.index, s.changed
		s.mu.Unlock()
		if want == 0 || index > want {
			return index
		}
		select {
		case <-changed:
		case <-timer.C:
			return index
		case <-r.Context().Done():
			return index
		}
	}
}

func (s *store) reject(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.unknown = append(s.unknown, r.Method+" "+r.URL.String())
	s.mu.Unlock()
	http.Error(w, "not served by the fake", http.StatusNotFound)
}

// Unknown returns the requests the fakes did not serve.
func (s *store) Unknown() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.unknown)
}

// consulKV serves Consul's KV read endpoint as consul-template's ls and key
// use it: GET /v1/kv/<key>, with ?recurse for every key under a prefix,
// answering a JSON list of {Key, Value (base64), Flags, LockIndex,
// CreateIndex, ModifyIndex} and, for no match, 404; both with
// X-Consul-Index, and blocking on ?index= up to ?wait=.
func consulKV(t *testing.T, s *store) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, ok := strings.CutPrefix(r.URL.Path, "/v1/kv/")
		if !ok || r.Method != http.MethodGet {
			s.reject(w, r)
			return
		}
		index := s.block(r)
		_, recurse := r.URL.Query()["recurse"]
		type pair struct {
			Key                      string
			Value                    []byte // base64, as Consul sends it
			Flags                    uint64
			LockIndex                uint64
			CreateIndex, ModifyIndex uint64
			Session                  string `json:",omitempty"`
		}
		var out []pair
		s.mu.Lock()
		for k, e := range s.kv {
			if k == key || recurse && strings.HasPrefix(k, key) {
				out = append(out, pair{Key: k, Value: []byte(e.value), CreateIndex: e.createIndex, ModifyIndex: e.modifyIndex})
			}
		}
		s.mu.Unlock()
		slices.SortFunc(out, func(a, b pair) int { return strings.Compare(a.Key, b.Key) })
		w.Header().Set("X-Consul-Index", strconv.FormatUint(index, 10))
		w.Header().Set("X-Consul-Knownleader", "true")
		w.Header().Set("X-Consul-Lastcontact", "0")
		if len(out) == 0 {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// nomadVars serves Nomad's variable read endpoint, GET /v1/var/<path>: the
// variable as JSON with its Items, or 404 when there is none; both with
// X-Nomad-Index, and blocking on ?index= up to ?wait=. Items are the store's
// keys "<path>\x00<item>".
func nomadVars(t *testing.T, s *store) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path, ok := strings.CutPrefix(r.URL.Path, "/v1/var/")
		if !ok || r.Method != http.MethodGet {
			s.reject(w, r)
			return
		}
		index := s.block(r)
		items := map[string]string{}
		var create, modify uint64
		s.mu.Lock()
		for k, e := range s.kv {
			if p, item, ok := strings.Cut(k, "\x00"); ok && p == path {
				items[item] = e.value
				if create == 0 || e.createIndex < create {
					create = e.createIndex
				}
				modify = max(modify, e.modifyIndex)
			}
		}
		s.mu.Unlock()
		w.Header().Set("X-Nomad-Index", strconv.FormatUint(index, 10))
		w.Header().Set("X-Nomad-Knownleader", "true")
		w.Header().Set("X-Nomad-Lastcontact", "0")
		if len(items) == 0 {
			http.Error(w, "variable not found", http.StatusNotFound)
			return
		}
		ns := r.URL.Query().Get("namespace")
		if ns == "" {
			ns = "default"
		}
		now := time.Now().UnixNano()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"Namespace": ns, "Path": path, "Items": items,
			"CreateIndex": create, "ModifyIndex": modify, "CreateTime": now, "ModifyTime": now,
		})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// nomadItem is the store key of item in the Nomad variable at path.
func nomadItem(path, item string) string { return fmt.Sprintf("%s\x00%s", path, item) }
