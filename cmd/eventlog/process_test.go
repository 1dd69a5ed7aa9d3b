package main

import (
	"errors"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
)

// proc is the eventlog binary running with its output in buffers.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
}

func startProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(eventlogBinary(t), args...), stdout: newSyncBuffer(), stderr: newSyncBuffer()}
	p.cmd.Env = append(p.cmd.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	})
	return p
}

// wait returns the exit code once the process has ended.
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	err := p.cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return p.cmd.ProcessState.ExitCode()
}

// freeAddr is a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// The password in NOMAD_ADDR (or -address) reaches neither stdout nor
// stderr, whether the stream works, Nomad refuses it, the connection fails
// or the address is rejected; the address itself is still logged, redacted.
func TestPasswordNeverPrinted(t *testing.T) {
	t.Parallel()
	const password = "pw-S3cret-42"
	up := startServer(t, nomadtest.Options{})
	up.Publish(event(1))
	refusing := startServer(t, nomadtest.Options{Mode: nomadtest.Chunked, Authorize: func(string) bool { return false }})
	host := func(s *nomadtest.Server) string { return strings.TrimPrefix(s.URL, "http://") }
	userinfo := "user:" + password + "@"

	tests := []struct {
		name string
		addr string   // NOMAD_ADDR
		args []string // after the common ones
		// until is what stderr must hold before SIGTERM; "" when the
		// process ends by itself.
		until    string
		code     int
		redacted string // stderr holds the address in this form
	}{
		{"streaming, json logs", "http://" + userinfo + host(up), []string{"-log-level", "debug"},
			"event stream subscribed", exitOK, "http://user:xxxxx@" + host(up)},
		{"streaming, text logs", "http://" + userinfo + host(up), []string{"-log-level", "debug", "-log-format", "text"},
			"event stream subscribed", exitOK, "http://user:xxxxx@" + host(up)},
		{"streaming, -address", "", []string{"-address", "http://" + userinfo + host(up)},
			"event stream subscribed", exitOK, "http://user:xxxxx@" + host(up)},
		{"refused by Nomad", "http://" + userinfo + host(refusing), []string{"-log-level", "debug"},
			"403 Forbidden", exitOK, "http://user:xxxxx@" + host(refusing)},
		{"connection refused", "http://" + userinfo + freeAddr(t), []string{"-log-level", "debug"},
			"connection refused", exitOK, "http://user:xxxxx@127.0.0.1:"},
		{"unknown scheme", "ftp://" + userinfo + "127.0.0.1:4646", nil,
			"", exitUsage, "ftp://user:xxxxx@127.0.0.1:4646"},
		{"address does not parse", "http://" + userinfo + "127.0.0.1:port", nil,
			"", exitUsage, "parsing Nomad address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startProc(t, []string{"NOMAD_ADDR=" + tt.addr}, append([]string{"-index", "0", "-topic", "Job"}, tt.args...)...)
			if tt.until != "" {
				p.stderr.waitFor(t, tt.until, func(s string) bool { return strings.Contains(s, tt.until) })
				if tt.code == exitOK && strings.HasPrefix(tt.name, "streaming") {
					p.stdout.waitLines(t, 1)
				}
				if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			}
			if code := p.wait(t); code != tt.code {
				t.Errorf("got exit code %d, want %d; stderr:\n%s", code, tt.code, p.stderr)
			}
			for name, out := range map[string]string{"stdout": p.stdout.String(), "stderr": p.stderr.String()} {
				if strings.Contains(out, password) {
					t.Errorf("the password is on %s:\n%s", name, out)
				}
			}
			if !strings.Contains(p.stderr.String(), tt.redacted) {
				t.Errorf("stderr does not hold %q:\n%s", tt.redacted, p.stderr)
			}
		})
	}
	// Redacting the logs must not drop the credentials from the requests.
	for _, r := range up.Requests() {
		if r.BasicAuth != "user:"+password {
			t.Errorf("got basic auth %q, want the credentials of NOMAD_ADDR", r.BasicAuth)
		}
	}
}
