package jobs

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The systemd units in ../../systemd are the other way to run the same
// programs with the same template; they are checked here, beside the job
// files, against the same real flags and template.

// unit reads the [Service] settings of a systemd unit; repeated keys
// accumulate.
func unit(t *testing.T, name string) map[string][]string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: not key=value: %q", name, line)
			}
			out[k] = append(out[k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// execStart splits a unit's only ExecStart into its program's base name and
// its arguments (the units quote nothing).
func execStart(t *testing.T, u map[string][]string) (string, []string) {
	t.Helper()
	if len(u["ExecStart"]) != 1 {
		t.Fatalf("want one ExecStart, got %q", u["ExecStart"])
	}
	f := strings.Fields(u["ExecStart"][0])
	return filepath.Base(f[0]), f[1:]
}

func TestSystemdUnits(t *testing.T) {
	t.Parallel()

	prefetch := unit(t, "prefetch.service")
	bin, args := execStart(t, prefetch)
	if bin != "prefetch" || len(args) == 0 || args[0] != "run" {
		t.Fatalf("prefetch.service runs %s %q, want prefetch run", bin, args)
	}
	vals := argFlags(t, "prefetch.service", args[1:], flags(t, "prefetch", "run"))
	if got := prefetch["SupplementaryGroups"]; len(got) != 1 || got[0] != "docker" {
		t.Errorf("prefetch.service SupplementaryGroups = %q, want docker (the socket's group)", got)
	}
	if got := prefetch["User"]; len(got) != 1 || got[0] == "root" {
		t.Errorf("prefetch.service User = %q, want a user of its own", got)
	}
	if lockDir := filepath.Dir(vals["-lock-file"]); !strings.Contains(strings.Join(prefetch["ReadWritePaths"], " "), lockDir) {
		t.Errorf("prefetch.service's -lock-file %q is not in its ReadWritePaths %q (ProtectSystem=strict)", vals["-lock-file"], prefetch["ReadWritePaths"])
	}

	// consul-template renders exactly the file prefetch reads, from the
	// template, with every variable the template reads set.
	ct := unit(t, "consul-template-prefetch.service")
	bin, args = execStart(t, ct)
	if bin != "consul-template" || len(args) != 2 || args[0] != "-config" {
		t.Fatalf("consul-template-prefetch.service runs %s %q, want consul-template -config FILE", bin, args)
	}
	j := readJob(t, filepath.Join("..", "..", "systemd", filepath.Base(args[1])), nil)
	tmpl := j.block(j.body, "template")
	if got := value[string](j, tmpl, "destination"); got != vals["-config"] {
		t.Errorf("consul-template writes %q, prefetch.service reads %q", got, vals["-config"])
	}
	if got := filepath.Base(value[string](j, tmpl, "source")); got != "prefetch.ctmpl" {
		t.Errorf("consul-template renders %q, want prefetch.ctmpl", got)
	}
	if got := filepath.Dir(vals["-config"]); !strings.Contains(strings.Join(ct["ReadWritePaths"], " "), got) {
		t.Errorf("consul-template-prefetch.service may not write %s (ReadWritePaths %q); it renames a temporary file there", got, ct["ReadWritePaths"])
	}
	ctmpl, err := os.ReadFile("prefetch.ctmpl")
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Join(ct["Environment"], " ")
	for _, m := range regexp.MustCompile(`env "([A-Z_]+)"`).FindAllStringSubmatch(string(ctmpl), -1) {
		if !strings.Contains(env, m[1]+"=") {
			t.Errorf("the template reads %s, which consul-template-prefetch.service does not set", m[1])
		}
	}

	eventlog := unit(t, "eventlog.service")
	bin, args = execStart(t, eventlog)
	if bin != "eventlog" {
		t.Fatalf("eventlog.service runs %s", bin)
	}
	vals = argFlags(t, "eventlog.service", args, flags(t, "eventlog"))
	if got := vals["-state-file"]; !strings.HasPrefix(got, "${STATE_DIRECTORY}/") || len(eventlog["StateDirectory"]) != 1 {
		t.Errorf("eventlog.service's -state-file %q is not in its StateDirectory %q", got, eventlog["StateDirectory"])
	}
}
