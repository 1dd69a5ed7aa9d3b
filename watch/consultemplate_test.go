package watch

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
)

// These tests render with the real consul-template, as Nomad's template block
// does, with no Consul server: the templates read a file or the environment.
// consul-template writes a temporary file next to the target and renames it
// over, exactly as in production.

// consulTemplate is the real consul-template binary (see
// testbed.ConsulTemplate).
func consulTemplate(t *testing.T) string { return testbed.ConsulTemplate(t) }

// consulTemplateRun runs consul-template -once in dir and fails the test if it
// fails.
func consulTemplateRun(t *testing.T, bin, dir string, env []string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), bin, "-once", "-template", "in.tpl:local/config.hcl")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("consul-template -once: %v\n%s", err, out)
	}
}

// TestConsulTemplateOnce: each render of new content by consul-template -once
// is one call, and a render of unchanged content, which consul-template
// leaves alone, is none.
func TestConsulTemplateOnce(t *testing.T) {
	t.Parallel()
	bin := consulTemplate(t)
	tests := []struct {
		name     string
		template func(dir string) string
		set      func(t *testing.T, dir, value string) []string // the environment to render with
	}{
		{"file source",
			func(dir string) string {
				return `x = "{{ file "` + filepath.Join(dir, "data.txt") + `" | trimSpace }}"` + "\n"
			},
			func(t *testing.T, dir, value string) []string {
				write(t, filepath.Join(dir, "data.txt"), value+"\n")
				return nil
			}},
		{"env source",
			func(string) string { return `x = "{{ env "PREFETCH_WATCH_X" }}"` + "\n" },
			func(t *testing.T, _, value string) []string { return []string{"PREFETCH_WATCH_X=" + value} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, "local", "config.hcl")
			run(t, func() error { return os.Mkdir(filepath.Join(dir, "local"), 0o755) })
			write(t, filepath.Join(dir, "in.tpl"), tt.template(dir))
			consulTemplateRun(t, bin, dir, tt.set(t, dir, "v0"))
			c := watching(t, path, fast)
			for _, value := range []string{"v1", "v22", "v333"} {
				consulTemplateRun(t, bin, dir, tt.set(t, dir, value))
				c.one(t)
				want := `x = "` + value + `"` + "\n"
				if got, err := os.ReadFile(path); err != nil || string(got) != want {
					t.Fatalf("got %q (err %v), want %q", got, err, want)
				}
			}
			consulTemplateRun(t, bin, dir, tt.set(t, dir, "v333"))
			c.none(t)
		})
	}
}

// TestConsulTemplateDaemon: a long-running consul-template, re-rendering as
// the file it reads changes, is one call per render, the first render
// included. It polls files every two seconds, well inside callWait.
func TestConsulTemplateDaemon(t *testing.T) {
	t.Parallel()
	bin := consulTemplate(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "local", "config.hcl")
	data := filepath.Join(dir, "data.txt")
	run(t, func() error { return os.Mkdir(filepath.Join(dir, "local"), 0o755) })
	write(t, filepath.Join(dir, "in.tpl"), `x = "{{ file "`+data+`" | trimSpace }}"`+"\n")
	write(t, data, "v1\n")
	c := watching(t, path, fast)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "-template", "in.tpl:local/config.hcl")
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, &out, &out
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = callWait // then it is killed
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		err := cmd.Wait() // exit status 12 is consul-template's for an interrupt
		if t.Failed() {
			t.Logf("consul-template stopped (%v), output:\n%s", err, out.Bytes())
		}
	}()

	for _, value := range []string{"v1", "v22", "v333"} {
		if value != "v1" {
			write(t, data, value+"\n")
		}
		c.one(t)
		want := `x = "` + value + `"` + "\n"
		if got, err := os.ReadFile(path); err != nil || string(got) != want {
			t.Fatalf("got %q (err %v), want %q", got, err, want)
		}
	}
}
