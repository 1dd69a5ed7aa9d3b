package faultproxy

import (
	"net"
	"strconv"
	"syscall"
	"testing"
)

// RefusedAddr is a 127.0.0.1 address that refuses connections for as long
// as the test runs. Closing a listener and reusing its port is not enough
// under parallel tests: another test's listener can get the port in
// between. RefusedAddr binds a socket to the port without listening on it,
// so no one else can take it and the kernel answers a connect with a reset
// (ECONNREFUSED).
func RefusedAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("refused address: socket: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("refused address: bind: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("refused address: getsockname: %v", err)
	}
	port := sa.(*syscall.SockaddrInet4).Port
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}
