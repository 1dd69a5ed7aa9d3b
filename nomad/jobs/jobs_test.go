package jobs

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/nomad-prefetch/nomad-prefetch/cluster"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/eventlog"
	"github.com/nomad-prefetch/nomad-prefetch/internal/flagdocs"
	"github.com/nomad-prefetch/nomad-prefetch/stage"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	"github.com/zclconf/go-cty/cty/gocty"
)

// A job file is read as Nomad's HCL2 jobspec reads it: variable blocks
// give var.*, with defaults overridden by -var values; file() reads
// relative to the working directory (here, this directory, where the docs
// say to run nomad job run); references Nomad interpolates at run time
// (${NOMAD_ADDR_http}, ${meta.x}, ${attr.x}, ${node.x}) are kept as
// written. Nothing here runs Nomad itself: its own validation (nomad job
// validate) is not available where these tests run.
type jobFile struct {
	t    *testing.T
	name string
	body *hclsyntax.Body
	vars map[string]cty.Value
}

// readJob parses name and sets its variables from their defaults and from
// set, which must name declared variables; a variable without a default
// must be set.
func readJob(t *testing.T, name string, set map[string]cty.Value) *jobFile {
	t.Helper()
	src, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	f, ds := hclsyntax.ParseConfig(src, name, hcl.InitialPos)
	if ds.HasErrors() {
		t.Fatalf("%s: %v", name, ds)
	}
	j := &jobFile{t: t, name: name, body: f.Body.(*hclsyntax.Body), vars: map[string]cty.Value{}}
	for _, b := range j.body.Blocks {
		if b.Type != "variable" {
			continue
		}
		if a, ok := b.Body.Attributes["default"]; ok {
			j.vars[b.Labels[0]] = j.eval(a.Expr)
		}
	}
	for k, v := range set {
		if !slices.ContainsFunc(j.body.Blocks, func(b *hclsyntax.Block) bool { return b.Type == "variable" && b.Labels[0] == k }) {
			t.Fatalf("%s declares no variable %q", name, k)
		}
		j.vars[k] = v
	}
	for _, b := range j.body.Blocks {
		if b.Type == "variable" && j.vars[b.Labels[0]] == cty.NilVal {
			t.Fatalf("%s: variable %q has no default and was not set", name, b.Labels[0])
		}
	}
	return j
}

// eval evaluates expr as Nomad's jobspec parser would when the job is
// submitted.
func (j *jobFile) eval(expr hclsyntax.Expression) cty.Value {
	j.t.Helper()
	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{"var": cty.ObjectVal(j.vars)},
		Functions: map[string]function.Function{
			"concat":   stdlib.ConcatFunc,
			"contains": stdlib.ContainsFunc,
			"flatten":  stdlib.FlattenFunc,
			"file":     fileFunc,
		},
	}
	// Runtime references stay as written, for the client to interpolate.
	for _, tr := range expr.Variables() {
		root := tr.RootName()
		if root == "var" {
			continue
		}
		ctx.Variables[root] = runtimeRef(ctx.Variables[root], root, tr[1:])
	}
	v, ds := expr.Value(ctx)
	if ds.HasErrors() {
		j.t.Fatalf("%s: %v", j.name, ds)
	}
	return v
}

// runtimeRef extends obj (the value so far for root) so that root.a.b
// evaluates to the string "${root.a.b}".
func runtimeRef(obj cty.Value, path string, rest hcl.Traversal) cty.Value {
	if len(rest) == 0 {
		return cty.StringVal("${" + path + "}")
	}
	attr, ok := rest[0].(hcl.TraverseAttr)
	if !ok {
		return cty.StringVal("${" + path + "}")
	}
	m := map[string]cty.Value{}
	if obj != cty.NilVal && obj.Type().IsObjectType() {
		m = obj.AsValueMap()
	}
	m[attr.Name] = runtimeRef(m[attr.Name], path+"."+attr.Name, rest[1:])
	return cty.ObjectVal(m)
}

var fileFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "path", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		data, err := os.ReadFile(args[0].AsString())
		return cty.StringVal(string(data)), err
	},
})

// block returns the only block of type typ (with labels, if given) in body.
func (j *jobFile) block(body *hclsyntax.Body, typ string, labels ...string) *hclsyntax.Body {
	j.t.Helper()
	var found []*hclsyntax.Block
	for _, b := range body.Blocks {
		if b.Type == typ && (labels == nil || slices.Equal(b.Labels, labels)) {
			found = append(found, b)
		}
	}
	if len(found) != 1 {
		j.t.Fatalf("%s: want one %s %q block, found %d", j.name, typ, labels, len(found))
	}
	return found[0].Body
}

// blocks returns every block of type typ in body.
func blocks(body *hclsyntax.Body, typ string) []*hclsyntax.Body {
	var out []*hclsyntax.Body
	for _, b := range body.Blocks {
		if b.Type == typ {
			out = append(out, b.Body)
		}
	}
	return out
}

// value evaluates body's attribute name into a Go value of type T.
func value[T any](j *jobFile, body *hclsyntax.Body, name string) T {
	j.t.Helper()
	var out T
	a, ok := body.Attributes[name]
	if !ok {
		j.t.Fatalf("%s: no %s at line %d", j.name, name, body.SrcRange.Start.Line)
	}
	ty, err := gocty.ImpliedType(out)
	if err != nil {
		j.t.Fatal(err)
	}
	v, err := convert.Convert(j.eval(a.Expr), ty) // a tuple is a list here
	if err != nil {
		j.t.Fatalf("%s: %s: %v", j.name, name, err)
	}
	if err := gocty.FromCtyValue(v, &out); err != nil {
		j.t.Fatalf("%s: %s: %v", j.name, name, err)
	}
	return out
}

// hostMount is where a task's mount comes from: a host volume's source
// (the client's host_volume name), and whether the mount or the volume is
// read-only.
type hostMount struct {
	source   string
	readOnly bool
}

// volumeMounts returns the task's mounts by destination, each resolved to
// the group's host volume it mounts; dynamic blocks are expanded as Nomad
// expands them when the job is submitted. A mount of anything but a host
// volume fails the test.
func volumeMounts(j *jobFile, group, task *hclsyntax.Body) map[string]hostMount {
	j.t.Helper()
	vols := map[string]hostMount{}
	for _, v := range expand(j, group, "volume") {
		if got := value[string](j, v.body, "type"); got != "host" {
			j.t.Errorf("volume %q is of type %q, want host", v.label, got)
		}
		m := hostMount{source: v.str("source")}
		if has(v.body, "read_only") {
			m.readOnly = v.bool("read_only")
		}
		vols[v.label] = m
	}
	out := map[string]hostMount{}
	for _, m := range expand(j, task, "volume_mount") {
		name := m.str("volume")
		vol, ok := vols[name]
		if !ok {
			j.t.Errorf("volume_mount of %q: the group has no such volume", name)
			continue
		}
		if has(m.body, "read_only") && m.bool("read_only") {
			vol.readOnly = true
		}
		out[m.str("destination")] = vol
	}
	return out
}

// expanded is one block of a type, written out or produced by a dynamic
// block, with the iterator's value when it is one.
type expanded struct {
	j     *jobFile
	label string
	body  *hclsyntax.Body
	iter  string    // the dynamic block's iterator name, "" when written out
	val   cty.Value // its value
}

func (e expanded) eval(name string) cty.Value {
	e.j.t.Helper()
	a, ok := e.body.Attributes[name]
	if !ok {
		e.j.t.Fatalf("%s: no %s at line %d", e.j.name, name, e.body.SrcRange.Start.Line)
	}
	if e.iter != "" {
		if tr, ok := a.Expr.(*hclsyntax.ScopeTraversalExpr); ok && tr.Traversal.RootName() == e.iter {
			return e.val
		}
	}
	return e.j.eval(a.Expr)
}

func (e expanded) str(name string) string { return e.eval(name).AsString() }
func (e expanded) bool(name string) bool  { return e.eval(name).True() }

// expand returns body's blocks of type typ, with its dynamic "typ" blocks
// expanded over their for_each (a list; labels evaluated without the
// iterator, which is all the job files need).
func expand(j *jobFile, body *hclsyntax.Body, typ string) []expanded {
	j.t.Helper()
	var out []expanded
	for _, b := range body.Blocks {
		switch {
		case b.Type == typ:
			label := ""
			if len(b.Labels) > 0 {
				label = b.Labels[0]
			}
			out = append(out, expanded{j: j, label: label, body: b.Body})
		case b.Type == "dynamic" && b.Labels[0] == typ:
			label := ""
			if a, ok := b.Body.Attributes["labels"]; ok {
				label = j.eval(a.Expr).Index(cty.NumberIntVal(0)).AsString()
			}
			content := j.block(b.Body, "content")
			for it := j.eval(b.Body.Attributes["for_each"].Expr).ElementIterator(); it.Next(); {
				_, v := it.Element()
				out = append(out, expanded{j: j, label: label, body: content, iter: typ, val: v})
			}
		}
	}
	return out
}

// has reports whether body sets attribute name.
func has(body *hclsyntax.Body, name string) bool {
	_, ok := body.Attributes[name]
	return ok
}

// binDir holds prefetch and eventlog, built from this module by TestMain.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "jobs-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", dir+"/", "../../cmd/prefetch", "../../cmd/eventlog").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building the binaries whose flags the job files use: %v\n%s", err, out)
		return 1
	}
	binDir = dir
	return m.Run()
}

// flags returns the flags the real binary's help lists for args (e.g.
// "prefetch", "run").
func flags(t *testing.T, args ...string) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, args[0]), append(args[1:], "-h")...)
	out, _ := cmd.CombinedOutput() // -h may exit non-zero; the text is what counts
	found := map[string]bool{}
	for _, f := range flagdocs.Flags(string(out)) {
		found["-"+f] = true
	}
	if len(found) == 0 {
		t.Fatalf("%s -h listed no flags:\n%s", strings.Join(args, " "), out)
	}
	return found
}

// argFlags checks that every -flag in args is one the binary has, and
// returns each flag's value (the next argument).
func argFlags(t *testing.T, where string, args []string, known map[string]bool) map[string]string {
	t.Helper()
	vals := map[string]string{}
	for i, a := range args {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, val, hasVal := strings.Cut(a, "=")
		if !known[name] {
			t.Errorf("%s passes %s, which the binary does not have (it has %v)", where, name, slices.Sorted(maps.Keys(known)))
		}
		if !hasVal && i+1 < len(args) {
			val = args[i+1]
		}
		vals[name] = val
	}
	return vals
}

func TestPrefetchJob(t *testing.T) {
	t.Parallel()
	for _, source := range []string{"consul", "nomad"} {
		t.Run(source, func(t *testing.T) {
			j := readJob(t, "prefetch.nomad.hcl", map[string]cty.Value{
				"image":         cty.StringVal("registry.example:5000/nomad-prefetch:v1"),
				"config_source": cty.StringVal(source),
			})
			job := j.block(j.body, "job", "prefetch")
			if got := value[string](j, job, "type"); got != "system" {
				t.Errorf("type = %q, want system (one agent on every node)", got)
			}
			if got := value[string](j, job, "node_pool"); got != "all" {
				t.Errorf("node_pool defaults to %q, want all", got)
			}
			group := j.block(job, "group", "prefetch")
			task := j.block(group, "task", "prefetch")
			if got := value[string](j, task, "driver"); got != "docker" {
				t.Errorf("driver = %q, want docker", got)
			}
			cfg := j.block(task, "config")
			if got := value[string](j, cfg, "image"); got != "registry.example:5000/nomad-prefetch:v1" {
				t.Errorf("image = %q, want var.image", got)
			}
			if got := value[string](j, cfg, "command"); got != "prefetch" {
				t.Errorf("command = %q, want prefetch (the image has no entrypoint)", got)
			}
			args := value[[]string](j, cfg, "args")
			if len(args) == 0 || args[0] != "run" {
				t.Fatalf("args = %q, want prefetch run", args)
			}
			vals := argFlags(t, "prefetch run", args[1:], flags(t, "prefetch", "run"))

			// The socket and the lock's directory through host volumes, the
			// socket's group, and a hardened task.
			mounts := volumeMounts(j, group, task)
			if got := mounts["/var/run/docker.sock"]; got != (hostMount{source: "prefetch-docker-sock"}) {
				t.Errorf("/var/run/docker.sock mounted from %+v, want the read-write host volume prefetch-docker-sock", got)
			}
			lockDir := filepath.Dir(vals["-lock-file"])
			if got := mounts[lockDir]; got != (hostMount{source: "prefetch-lock"}) {
				t.Errorf("-lock-file %q: its directory is mounted from %+v, want the host volume prefetch-lock: two allocations on a node would not share it", vals["-lock-file"], got)
			}
			if got := value[[]string](j, cfg, "group_add"); !slices.Equal(got, []string{"${meta.docker_gid}"}) {
				t.Errorf("group_add = %q, want the node's meta.docker_gid", got)
			}
			if !value[bool](j, cfg, "readonly_rootfs") {
				t.Errorf("readonly_rootfs is not true")
			}
			if got := value[[]string](j, cfg, "cap_drop"); !slices.Equal(got, []string{"all"}) {
				t.Errorf("cap_drop = %q, want [all]", got)
			}
			if got := value[[]string](j, cfg, "security_opt"); !slices.Contains(got, "no-new-privileges") {
				t.Errorf("security_opt = %q, want no-new-privileges", got)
			}

			// The config: rendered where -config reads it, never restarting.
			tmpl := j.block(task, "template")
			dest := value[string](j, tmpl, "destination")
			if dest != "local/config.hcl" || vals["-config"] != "/"+dest {
				t.Errorf("template destination %q, -config %q; want local/config.hcl, read as /local/config.hcl", dest, vals["-config"])
			}
			if got := value[string](j, tmpl, "change_mode"); got != "noop" {
				t.Errorf("change_mode = %q, want noop: the agent watches the file itself", got)
			}
			ctmpl, err := os.ReadFile("prefetch.ctmpl")
			if err != nil {
				t.Fatal(err)
			}
			if value[string](j, tmpl, "data") != string(ctmpl) {
				t.Errorf("the template's data is not prefetch.ctmpl")
			}
			// Every variable the template reads is set by the job.
			envBody := j.block(task, "env")
			for _, m := range regexp.MustCompile(`env "([A-Z_]+)"`).FindAllStringSubmatch(string(ctmpl), -1) {
				if !has(envBody, m[1]) {
					t.Errorf("the template reads %s, which the job's env does not set", m[1])
				}
			}
			if got := value[string](j, envBody, "PREFETCH_CONFIG_SOURCE"); got != source {
				t.Errorf("PREFETCH_CONFIG_SOURCE = %q, want %q", got, source)
			}

			// Status on the port the service checks.
			if got := vals["-listen"]; got != "${NOMAD_ADDR_http}" {
				t.Errorf("-listen %q, want ${NOMAD_ADDR_http}", got)
			}
			j.block(j.block(group, "network"), "port", "http")
			svc := j.block(group, "service")
			if got := value[string](j, svc, "port"); got != "http" {
				t.Errorf("service port = %q, want http", got)
			}
			var paths []string
			for _, c := range blocks(svc, "check") {
				paths = append(paths, value[string](j, c, "path"))
			}
			if !slices.Contains(paths, "/readyz") {
				t.Errorf("the service checks %q, want /readyz among them", paths)
			}
			// The cluster view's Consul filter (cluster.ConsulJobMeta) finds
			// the agents by this meta; without it -provider consul sees none.
			if got := value[string](j, j.block(svc, "meta"), cluster.ConsulJobMeta); got != "${NOMAD_JOB_ID}" {
				t.Errorf("service meta %s = %q, want ${NOMAD_JOB_ID}", cluster.ConsulJobMeta, got)
			}
		})
	}

	t.Run("bundle_volume", func(t *testing.T) {
		j := readJob(t, "prefetch.nomad.hcl", map[string]cty.Value{"image": cty.StringVal("x:1")})
		group := j.block(j.block(j.body, "job", "prefetch"), "group", "prefetch")
		task := j.block(group, "task", "prefetch")
		if got, ok := volumeMounts(j, group, task)["/bootstrap"]; ok {
			t.Errorf("/bootstrap mounted from %+v without bundle_volume", got)
		}
		j.vars["bundle_volume"] = cty.StringVal("prefetch-bundles")
		if got := volumeMounts(j, group, task)["/bootstrap"]; got != (hostMount{source: "prefetch-bundles", readOnly: true}) {
			t.Errorf("with bundle_volume: /bootstrap mounted from %+v, want the host volume prefetch-bundles, read-only", got)
		}
	})

	// The status token: without status_token_var none (the inventory on
	// loopback only); with it, rendered into the secrets directory from the
	// variable and passed to -status-token-file.
	t.Run("status_token_var", func(t *testing.T) {
		j := readJob(t, "prefetch.nomad.hcl", map[string]cty.Value{"image": cty.StringVal("x:1")})
		task := j.block(j.block(j.block(j.body, "job", "prefetch"), "group", "prefetch"), "task", "prefetch")
		cfg := j.block(task, "config")
		dyn := j.block(task, "dynamic", "template")
		if vals := argFlags(t, "prefetch run", value[[]string](j, cfg, "args")[1:], flags(t, "prefetch", "run")); vals["-status-token-file"] != "" {
			t.Errorf("without status_token_var: -status-token-file %q, want none", vals["-status-token-file"])
		}
		if got := value[[]string](j, dyn, "for_each"); len(got) != 0 {
			t.Errorf("without status_token_var: the token template renders for %q, want not at all", got)
		}

		j.vars["status_token_var"] = cty.StringVal("nomad/jobs/prefetch/prefetch")
		vals := argFlags(t, "prefetch run", value[[]string](j, cfg, "args")[1:], flags(t, "prefetch", "run"))
		if got := value[[]string](j, dyn, "for_each"); !slices.Equal(got, []string{"nomad/jobs/prefetch/prefetch"}) {
			t.Errorf("with status_token_var: for_each %q, want the variable", got)
		}
		tmpl := j.block(dyn, "content")
		dest := value[string](j, tmpl, "destination")
		if dest != "secrets/status_token" || vals["-status-token-file"] != "${NOMAD_SECRETS_DIR}/status_token" {
			t.Errorf("token template destination %q, -status-token-file %q; want secrets/status_token, read as ${NOMAD_SECRETS_DIR}/status_token", dest, vals["-status-token-file"])
		}
		if got := value[string](j, tmpl, "data"); got != `{{ with nomadVar "${template.value}" }}{{ .status_token }}{{ end }}` {
			t.Errorf("token template data %q, want the variable's status_token item", got)
		}
		if got := value[string](j, tmpl, "change_mode"); got != "noop" {
			t.Errorf("token template change_mode %q, want noop: the agent reads the file at every request", got)
		}
		if got := value[string](j, tmpl, "perms"); got != "0400" {
			t.Errorf("token template perms %q, want 0400", got)
		}
	})

	t.Run("config_source validation", func(t *testing.T) {
		j := readJob(t, "prefetch.nomad.hcl", map[string]cty.Value{"image": cty.StringVal("x:1")})
		cond := j.block(j.block(j.body, "variable", "config_source"), "validation").Attributes["condition"].Expr
		for _, tc := range []struct {
			source string
			ok     bool
		}{{"consul", true}, {"nomad", true}, {"vault", false}} {
			j.vars["config_source"] = cty.StringVal(tc.source)
			if got := j.eval(cond).True(); got != tc.ok {
				t.Errorf("config_source %q accepted: %v, want %v", tc.source, got, tc.ok)
			}
		}
	})
}

func TestEventlogJob(t *testing.T) {
	t.Parallel()
	for _, ha := range []bool{false, true} {
		t.Run(fmt.Sprintf("ha=%v", ha), func(t *testing.T) {
			t.Parallel()
			j := readJob(t, "eventlog.nomad.hcl", map[string]cty.Value{
				"image":  cty.StringVal("registry.example:5000/nomad-prefetch:v1"),
				"topics": cty.ListVal([]cty.Value{cty.StringVal("Job"), cty.StringVal("Allocation:*")}),
				"ha":     cty.BoolVal(ha),
			})
			checkEventlogJob(t, j, ha)
		})
	}

	t.Run("default topics", func(t *testing.T) {
		j := readJob(t, "eventlog.nomad.hcl", map[string]cty.Value{"image": cty.StringVal("x:1")})
		args := value[[]string](j, j.block(j.block(j.block(j.block(j.body, "job", "eventlog"), "group", "eventlog"), "task", "eventlog"), "config"), "args")
		if slices.Contains(args, "-topic") {
			t.Errorf("with no topics set, args %q still pass -topic", args)
		}
		if slices.Contains(args, "-ha-lock") {
			t.Errorf("HA is on by default: args %q", args)
		}
	})
}

// eventlogLock is the -ha-lock path the job passes with ha = true.
func eventlogLock(t *testing.T) string {
	j := readJob(t, "eventlog.nomad.hcl", map[string]cty.Value{"image": cty.StringVal("x:1"), "ha": cty.BoolVal(true)})
	args := value[[]string](j, j.block(j.block(j.block(j.block(j.body, "job", "eventlog"), "group", "eventlog"), "task", "eventlog"), "config"), "args")
	i := slices.Index(args, "-ha-lock")
	if i < 0 || i+1 == len(args) {
		t.Fatalf("with ha, args %q pass no -ha-lock", args)
	}
	return args[i+1]
}

func checkEventlogJob(t *testing.T, j *jobFile, ha bool) {
	job := j.block(j.body, "job", "eventlog")
	if got := value[string](j, job, "type"); got != "service" {
		t.Errorf("type = %q, want service", got)
	}
	group := j.block(job, "group", "eventlog")
	count := value[int](j, group, "count")
	switch {
	case !ha && count != 1:
		t.Errorf("count = %d, want 1 without ha: two would write every event twice", count)
	case ha && count != 2:
		t.Errorf("count = %d, want 2 with ha: a holder and a standby", count)
	}
	c := j.block(group, "constraint")
	if value[string](j, c, "operator") != "distinct_hosts" || value[string](j, c, "value") != "true" {
		t.Errorf("the group is not constrained to distinct hosts: a standby on the holder's node dies with it")
	}
	j.block(group, "restart")
	disk := j.block(group, "ephemeral_disk")
	if !value[bool](j, disk, "sticky") {
		t.Errorf("ephemeral_disk is not sticky: a restart would not find the state file")
	}
	task := j.block(group, "task", "eventlog")
	if got := value[string](j, task, "driver"); got != "docker" {
		t.Errorf("driver = %q, want docker", got)
	}
	// Nomad refuses a job whose logs may outgrow its ephemeral disk.
	logs := j.block(task, "logs")
	if l, d := value[int](j, logs, "max_files")*value[int](j, logs, "max_file_size"), value[int](j, disk, "size"); l >= d {
		t.Errorf("logs may take %d MB of a %d MB ephemeral disk", l, d)
	}
	cfg := j.block(task, "config")
	if got := value[string](j, cfg, "command"); got != "eventlog" {
		t.Errorf("command = %q, want eventlog", got)
	}
	args := value[[]string](j, cfg, "args")
	vals := argFlags(t, "eventlog", args, flags(t, "eventlog"))
	_, stateFile := vals["-state-file"]
	switch {
	case !ha && !strings.HasPrefix(vals["-state-file"], "${NOMAD_ALLOC_DIR}/data/"):
		t.Errorf("-state-file %q, want it in ${NOMAD_ALLOC_DIR}/data/, on the sticky disk", vals["-state-file"])
	case ha && (stateFile || vals["-ha-lock"] == ""):
		t.Errorf("with ha, args %q: want -ha-lock and no -state-file (eventlog refuses both)", args)
	case !ha && vals["-ha-lock"] != "":
		t.Errorf("without ha, args %q pass -ha-lock", args)
	}
	if got := strings.Join(args, " "); !strings.Contains(got, "-topic Job -topic Allocation:*") {
		t.Errorf("args %q do not pass var.topics as -topic flags", got)
	}

	// The token: the workload identity, where eventlog reads it.
	id := j.block(task, "identity")
	fileToken := has(id, "file") && value[bool](j, id, "file")
	envToken := has(id, "env") && value[bool](j, id, "env")
	switch {
	case fileToken && vals["-token-file"] != "${NOMAD_SECRETS_DIR}/nomad_token":
		t.Errorf("identity is a file, but -token-file is %q", vals["-token-file"])
	case !fileToken && !envToken:
		t.Errorf("the workload identity is given to the task neither as a file nor in NOMAD_TOKEN")
	}
	if got := value[string](j, j.block(task, "env"), "NOMAD_ADDR"); got != "unix://${NOMAD_SECRETS_DIR}/api.sock" {
		t.Errorf("NOMAD_ADDR = %q, want the task API socket", got)
	}

	// Health on the port the service checks.
	if got := vals["-listen"]; got != "${NOMAD_ADDR_http}" {
		t.Errorf("-listen %q, want ${NOMAD_ADDR_http}", got)
	}
	svc := j.block(group, "service")
	if got := value[string](j, j.block(svc, "check"), "path"); got != "/healthz" {
		t.Errorf("the service checks %q, want /healthz", got)
	}
}

// topicNeeds is what Nomad 2.0's event endpoint checks for each topic
// (nomad/event_endpoint.go validateNsOp): a namespace capability, node:read,
// or a management token ("").
var topicNeeds = map[string]string{
	"Job": "read-job", "Evaluation": "read-job", "Allocation": "read-job",
	"Deployment": "read-job", "Service": "read-job", "CSIPlugin": "read-job",
	"CSIVolume": "csi-read-volume", "HostVolume": "host-volume-read",
	"Node": "node:read", "NodePool": "", "ACLToken": "", "ACLPolicy": "", "ACLRole": "",
}

func TestEventlogPolicy(t *testing.T) {
	t.Parallel()
	j := readJob(t, "eventlog-policy.hcl", nil)
	// Each default topic is allowed, by capability lists, in every
	// namespace, the job's own included (Nomad applies the most specific
	// namespace rule alone, not merged with "*").
	want := map[string]bool{}
	for _, topic := range eventlog.DefaultTopics() {
		need, ok := topicNeeds[topic]
		switch {
		case !ok:
			t.Errorf("default topic %s: what Nomad checks for it is not known here", topic)
		case need == "":
			t.Errorf("default topic %s needs a management token: the policy can't grant it, and Nomad refuses the whole subscription", topic)
		case need != "node:read":
			want[need] = true
		}
	}
	for _, ns := range []string{"*", "default"} {
		b := j.block(j.body, "namespace", ns)
		if has(b, "policy") {
			t.Errorf(`namespace %q: a coarse policy; want a capability list`, ns)
		}
		got := value[[]string](j, b, "capabilities")
		granted := map[string]bool{}
		for _, c := range got {
			granted[c] = true
		}
		if !maps.Equal(want, granted) {
			t.Errorf("namespace %q capabilities %q, want exactly %v", ns, got, slices.Sorted(maps.Keys(want)))
		}
	}
	if got := value[string](j, j.block(j.body, "node"), "policy"); got != "read" {
		t.Errorf("node policy = %q, want read (Node events)", got)
	}
	// Variables: exactly the lock's path, read and write, in the job's
	// namespace, and nothing else in any namespace.
	var paths []string
	for _, ns := range blocks(j.body, "namespace") {
		for _, vars := range blocks(ns, "variables") {
			for _, b := range vars.Blocks {
				paths = append(paths, strings.Join(b.Labels, ""))
			}
		}
	}
	lock := eventlogLock(t)
	if !slices.Equal(paths, []string{lock}) {
		t.Fatalf("variable paths %q, want exactly the job's -ha-lock %q", paths, lock)
	}
	caps := value[[]string](j, j.block(j.block(j.block(j.body, "namespace", "default"), "variables"), "path", lock), "capabilities")
	if slices.Sort(caps); !slices.Equal(caps, []string{"read", "write"}) {
		t.Errorf("%s capabilities %q, want read and write (the lock's operations and the checkpoint's reads), nothing more", lock, caps)
	}
}

func TestPrefetchPolicy(t *testing.T) {
	t.Parallel()
	j := readJob(t, "prefetch-policy.hcl", nil)
	if got := value[[]string](j, j.block(j.body, "namespace", "*"), "capabilities"); !slices.Equal(got, []string{"list-jobs", "read-job"}) {
		t.Errorf(`namespace "*" capabilities = %q, want list-jobs and read-job`, got)
	}
	if got := value[string](j, j.block(j.body, "node"), "policy"); got != "read" {
		t.Errorf("node policy = %q, want read", got)
	}
	// The staged set: read on its one path, in its namespace, whose block
	// repeats the "*" capabilities (Nomad applies the most specific alone).
	def := j.block(j.body, "namespace", stage.Namespace)
	if got := value[[]string](j, def, "capabilities"); !slices.Equal(got, []string{"list-jobs", "read-job"}) {
		t.Errorf("namespace %q capabilities = %q, want those of \"*\"", stage.Namespace, got)
	}
	vars := j.block(def, "variables")
	if n := len(blocks(vars, "path")); n != 2 {
		t.Errorf("%d variable paths, want the staged set's and the relay lock's only", n)
	}
	for path, want := range map[string][]string{stage.Path: {"read"}, config.DefaultRelayLockPath: {"read", "write"}} {
		caps := value[[]string](j, j.block(vars, "path", path), "capabilities")
		slices.Sort(caps)
		if !slices.Equal(caps, want) {
			t.Errorf("%s capabilities %q, want %q", path, caps, want)
		}
	}
}

// stagedCaps are the variables capabilities ns grants on the staged set's
// path, and fails on any other path.
func stagedCaps(j *jobFile, ns *hclsyntax.Body) []string {
	vars := j.block(ns, "variables")
	paths := blocks(vars, "path")
	if len(paths) != 1 {
		j.t.Errorf("%d variable paths, want the staged set's only", len(paths))
		return nil
	}
	p := j.block(vars, "path", stage.Path)
	caps := value[[]string](j, p, "capabilities")
	slices.Sort(caps)
	return caps
}

// The stager's policy: parse, read and submit jobs, and read and write the
// staged set, nothing more.
func TestStagePolicy(t *testing.T) {
	t.Parallel()
	j := readJob(t, "prefetch-stage-policy.hcl", nil)
	want := []string{"parse-job", "read-job", "submit-job"}
	for _, ns := range []string{"*", stage.Namespace} {
		if got := value[[]string](j, j.block(j.body, "namespace", ns), "capabilities"); !slices.Equal(got, want) {
			t.Errorf("namespace %q capabilities = %q, want %q", ns, got, want)
		}
	}
	if got := stagedCaps(j, j.block(j.body, "namespace", stage.Namespace)); !slices.Equal(got, []string{"read", "write"}) {
		t.Errorf("%s capabilities %q, want read and write", stage.Path, got)
	}
}

// No job file binds host paths through the docker driver (which would need
// plugin "docker" { config { volumes { enabled = true } } } on every
// client, letting every job of every namespace mount any host path), every
// docker task is hardened, and the docs never ask for docker volumes.
func TestNoDockerVolumes(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("*.nomad.hcl")
	if err != nil || len(files) == 0 {
		t.Fatalf("no job files: %v", err)
	}
	for _, name := range files {
		j := readJob(t, name, map[string]cty.Value{"image": cty.StringVal("x:1")})
		for _, job := range blocks(j.body, "job") {
			for _, group := range blocks(job, "group") {
				for _, task := range blocks(group, "task") {
					if value[string](j, task, "driver") != "docker" {
						continue
					}
					cfg := j.block(task, "config")
					if has(cfg, "volumes") || len(blocks(cfg, "mount")) > 0 || len(blocks(cfg, "mounts")) > 0 {
						t.Errorf("%s: a docker task binds host paths in its config (volumes/mount): that needs docker volumes enabled on every client", name)
					}
					if !has(cfg, "readonly_rootfs") || !value[bool](j, cfg, "readonly_rootfs") {
						t.Errorf("%s: readonly_rootfs is not true", name)
					}
					if !has(cfg, "cap_drop") || !slices.Equal(value[[]string](j, cfg, "cap_drop"), []string{"all"}) {
						t.Errorf("%s: cap_drop is not [all]", name)
					}
					if !has(cfg, "security_opt") || !slices.Contains(value[[]string](j, cfg, "security_opt"), "no-new-privileges") {
						t.Errorf("%s: security_opt lacks no-new-privileges", name)
					}
				}
			}
		}
	}
	enabled := regexp.MustCompile(`(?s)volumes\s*\{[^}]*enabled\s*=\s*true`)
	docs, _ := filepath.Glob("../../docs/*.md")
	for _, name := range append(append(docs, "../../README.md", "../../config.hcl.example"), files...) {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if loc := enabled.FindIndex(b); loc != nil {
			t.Errorf("%s:%d asks for docker volumes enabled", name, 1+strings.Count(string(b[:loc[0]]), "\n"))
		}
	}
}

// The deployer's policy grants exactly the host volumes the job mounts by
// default (and the bundles one), each with the least capability the mount
// needs, and no wildcard.
func TestDeployPolicy(t *testing.T) {
	t.Parallel()
	p := readJob(t, "prefetch-deploy-policy.hcl", nil)
	granted := map[string][]string{}
	for _, b := range p.body.Blocks {
		if b.Type == "host_volume" {
			if strings.ContainsAny(b.Labels[0], "*?") {
				t.Errorf("host_volume %q: a wildcard would grant host volumes this job does not mount", b.Labels[0])
			}
			granted[b.Labels[0]] = value[[]string](p, b.Body, "capabilities")
		}
		if b.Type == "namespace" && has(b.Body, "policy") {
			t.Errorf("namespace %q: a policy, not a capability list", b.Labels[0])
		}
	}
	j := readJob(t, "prefetch.nomad.hcl", map[string]cty.Value{"image": cty.StringVal("x:1"), "bundle_volume": cty.StringVal("prefetch-bundles")})
	group := j.block(j.block(j.body, "job", "prefetch"), "group", "prefetch")
	mounts := volumeMounts(j, group, j.block(group, "task", "prefetch"))
	want := map[string][]string{}
	for _, m := range mounts {
		c := "mount-readwrite"
		if m.readOnly {
			c = "mount-readonly"
		}
		want[m.source] = []string{c}
	}
	if !maps.EqualFunc(granted, want, slices.Equal) {
		t.Errorf("the deploy policy grants %v, the job mounts %v", granted, want)
	}
}

// The agents' identity: only with discovery_relay or discovery_peers,
// named relay, with the audience the agents check and a TTL Nomad renews
// it within.
func TestPrefetchJobRelayIdentity(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		relay bool
		peers string
	}{{false, ""}, {true, ""}, {false, "first"}, {true, "last"}} {
		on := c.relay || c.peers != ""
		j := readJob(t, "prefetch.nomad.hcl", map[string]cty.Value{
			"image": cty.StringVal("registry.example:5000/nomad-prefetch:v1"), "discovery": cty.True,
			"discovery_relay": cty.BoolVal(c.relay), "discovery_peers": cty.StringVal(c.peers),
		})
		task := j.block(j.block(j.block(j.body, "job", "prefetch"), "group", "prefetch"), "task", "prefetch")
		var named []expanded
		for _, id := range expand(j, task, "identity") {
			if has(id.body, "name") {
				named = append(named, id)
			}
		}
		switch {
		case !on && len(named) != 0:
			t.Errorf("%+v: %d named identities, want none", c, len(named))
		case on && len(named) != 1:
			t.Fatalf("%+v: %d named identities, want the relay's", c, len(named))
		case on:
			id := named[0]
			aud := id.eval("aud")
			if id.str("name") != "relay" || aud.LengthInt() != 1 || aud.Index(cty.NumberIntVal(0)).AsString() != config.DefaultRelayAudience || !id.bool("file") || id.str("ttl") == "" {
				t.Errorf("the relay identity: name %q, aud %#v, file %v, ttl %q; want relay, [%q], true, a TTL",
					id.str("name"), aud, id.bool("file"), id.str("ttl"), config.DefaultRelayAudience)
			}
		}
	}
}
