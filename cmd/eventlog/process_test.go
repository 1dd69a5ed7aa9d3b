package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/internal/faultproxy"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
)

// proc is the eventlog binary running with its output in buffers.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *nomadtest.Buffer
}

func startProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(eventlogBinary(t), args...), stdout: nomadtest.NewBuffer(), stderr: nomadtest.NewBuffer()}
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
			"event stream subscribed", exitOK, "http://xxxxx@" + host(up)},
		{"streaming, text logs", "http://" + userinfo + host(up), []string{"-log-level", "debug", "-log-format", "text"},
			"event stream subscribed", exitOK, "http://xxxxx@" + host(up)},
		{"streaming, -address", "", []string{"-address", "http://" + userinfo + host(up)},
			"event stream subscribed", exitOK, "http://xxxxx@" + host(up)},
		{"a token as the user name", "http://" + password + "@" + host(refusing), []string{"-log-level", "debug"},
			"403 Forbidden", exitOK, "http://xxxxx@" + host(refusing)},
		{"refused by Nomad", "http://" + userinfo + host(refusing), []string{"-log-level", "debug"},
			"403 Forbidden", exitOK, "http://xxxxx@" + host(refusing)},
		{"connection refused", "http://" + userinfo + faultproxy.RefusedAddr(t), []string{"-log-level", "debug"},
			"connection refused", exitOK, "http://xxxxx@127.0.0.1:"},
		{"unknown scheme", "ftp://" + userinfo + "127.0.0.1:4646", nil,
			"", exitUsage, "ftp://xxxxx@127.0.0.1:4646"},
		{"address does not parse", "http://" + userinfo + "127.0.0.1:port", nil,
			"", exitUsage, "parsing Nomad address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startProc(t, []string{"NOMAD_ADDR=" + tt.addr}, append([]string{"-index", "0", "-topic", "Job"}, tt.args...)...)
			if tt.until != "" {
				p.stderr.WaitFor(t, tt.until, func(s string) bool { return strings.Contains(s, tt.until) })
				if tt.code == exitOK && strings.HasPrefix(tt.name, "streaming") {
					p.stdout.WaitLines(t, 1)
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

// errorLines returns the ERROR lines of JSON logs.
func errorLines(logs string) []string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, `"level":"ERROR"`) {
			out = append(out, l)
		}
	}
	return out
}

// A closed stdout (the log shipper died, `eventlog | head`) is not a
// SIGPIPE death: one ERROR line, the state file saved with the last frame
// fully written, exit 1. With stderr closed as well, the same without the
// line.
func TestClosedStdout(t *testing.T) {
	t.Parallel()
	for _, stderrClosed := range []bool{false, true} {
		t.Run(fmt.Sprintf("stderr closed %v", stderrClosed), func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, nomadtest.Options{})
			for i := range 5 {
				srv.Publish(event(i))
			}
			state := filepath.Join(t.TempDir(), "state")
			cmd := exec.Command(eventlogBinary(t), "-address", srv.URL, "-state-file", state, "-state-interval", "1h", "-index", "0", "-topic", "Job")
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stdout = pw
			stderr := nomadtest.NewBuffer()
			cmd.Stderr = stderr
			if stderrClosed {
				er, ew, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				er.Close()
				cmd.Stderr = ew
				defer ew.Close()
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pw.Close()
			br := bufio.NewReader(pr)
			for range 5 { // every line written: the state must say 5
				if _, err := br.ReadString('\n'); err != nil {
					t.Fatal(err)
				}
			}
			pr.Close()
			srv.Publish(event(5)) // its write fails
			done := make(chan struct{})
			go func() {
				cmd.Wait()
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(hang):
				cmd.Process.Kill()
				<-done
				t.Fatal("eventlog did not stop after stdout was closed")
			}
			if code := cmd.ProcessState.ExitCode(); code != exitFailure {
				t.Errorf("got %v, want exit code 1", cmd.ProcessState)
			}
			if idx, ok, err := readState(state); idx != 5 || !ok || err != nil {
				t.Errorf("state: got %d %v %v, want 5, the last frame fully written", idx, ok, err)
			}
			errs := errorLines(stderr.String())
			switch {
			case stderrClosed && stderr.String() != "":
				t.Errorf("got stderr %q with stderr closed", stderr)
			case !stderrClosed && (len(errs) != 1 || !strings.Contains(errs[0], "stdout was closed")):
				t.Errorf("got ERROR lines %q, want one saying stdout was closed; stderr:\n%s", errs, stderr)
			}
		})
	}
}

// A closed stderr does not stop the stream.
func TestClosedStderr(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nomadtest.Options{})
	srv.Publish(event(0))
	state := filepath.Join(t.TempDir(), "state")
	cmd := exec.Command(eventlogBinary(t), "-address", srv.URL, "-state-file", state, "-index", "0", "-topic", "Job", "-log-level", "debug")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	er, ew, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	er.Close()
	cmd.Stdout, cmd.Stderr = pw, ew
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	ew.Close()
	br := bufio.NewReader(pr)
	for i := range 3 {
		if i > 0 {
			srv.Publish(event(i)) // logs at DEBUG, written to the closed stderr
		}
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatalf("line %d: %v (%v)", i+1, err, cmd.Wait())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("after SIGTERM: got %v, want exit 0", err)
	}
	if idx, _, err := readState(state); idx != 3 || err != nil {
		t.Errorf("state: got %d (%v), want 3", idx, err)
	}
}
