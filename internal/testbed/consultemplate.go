package testbed

import (
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// ConsulTemplate finds the real consul-template binary in PATH, then in
// $(go env GOPATH)/bin, where `scripts/deps.sh test` installs it. Without it the
// test is skipped, or fails under CI=true.
func ConsulTemplate(t testing.TB) string {
	t.Helper()
	if bin, err := exec.LookPath("consul-template"); err == nil {
		return bin
	}
	gopath := build.Default.GOPATH
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		gopath = strings.TrimSpace(string(out))
	}
	for _, p := range filepath.SplitList(gopath) {
		bin := filepath.Join(p, "bin", "consul-template")
		if fi, err := os.Stat(bin); err == nil && !fi.IsDir() {
			return bin
		}
	}
	msg := "consul-template not found in PATH or $(go env GOPATH)/bin; install it with scripts/deps.sh test (go install github.com/hashicorp/consul-template@v0.42.1)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}
