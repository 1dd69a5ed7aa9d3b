package testbed

import (
	"bytes"
	"sync"
	"testing"

	"github.com/nomad-prefetch/nomad-prefetch/internal/faultproxy"
)

// ProxiedRegistry starts a registry named name with a fault proxy in front
// of it, both stopped when t ends. Images are referred to through the
// proxy's address (so faults and counts apply); push through the
// registry's own address.
func (b *Bed) ProxiedRegistry(t testing.TB, name string) (*Registry, *faultproxy.Proxy) {
	t.Helper()
	Need(t, b)
	reg, err := b.StartRegistry(name, RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	p, err := faultproxy.Start("http://" + reg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return reg, p
}

// Buffer is a bytes.Buffer that concurrent writers (a logger, a process
// running in-process) and a test reading it can share.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
