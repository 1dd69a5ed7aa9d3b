// Package tryout runs scripts/try.sh, the README's first command, as a
// newcomer would, so that a change to the program's output or behaviour
// that breaks the try-out fails the tests rather than the newcomer.
package tryout

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
)

func TestTryScript(t *testing.T) {
	if why := testbed.Missing(); why != "" {
		if os.Getenv("CI") == "true" && !testing.Short() {
			t.Fatalf("try.sh needs %s; under CI=true it must run", why)
		}
		t.Skip(why)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "try.sh"))
	cmd.Env = append(os.Environ(),
		"PREFETCH_TRY_UPSTREAM="+testbed.FreeAddr(t),
		"PREFETCH_TRY_CLUSTER="+testbed.FreeAddr(t),
		"PREFETCH_TRY_LISTEN="+testbed.FreeAddr(t),
	)
	done := make(chan struct{})
	var out []byte
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("try.sh did not end within 5 minutes:\n%s", out)
	}
	if err != nil {
		t.Fatalf("try.sh: %v\n%s", err, out)
	}
	for _, want := range []string{
		"retagged from",
		"image restored after Docker removed it",
		"prefetch run exited 0",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("try.sh's output lacks %q:\n%s", want, out)
		}
	}
}
