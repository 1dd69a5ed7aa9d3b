package stage

import (
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

func TestVariablesAsNomadJobRunTakesThem(t *testing.T) {
	files := []VarFile{
		{Name: "a.hcl", Content: []byte("tag = \"v1\"\nports = [80, 443]\n")},
		{Name: "b.hcl", Content: []byte("region = \"eu\"\ntag = \"v2\"\n")},
	}
	got, err := Variables([]string{"PATH=/bin", "NOMAD_VAR_tag=env", "NOMAD_VAR_dc=dc1", "NOMAD_VAR_1bad=x"}, files, []string{"tag=v3", `note=a "quoted" ${x} \ line`})
	if err != nil {
		t.Fatal(err)
	}
	want := "tag = \"v3\"\ndc = \"dc1\"\nports = [80, 443]\nregion = \"eu\"\nnote = \"a \\\"quoted\\\" $${x} \\\\ line\"\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	// What it writes is HCL Nomad reads: the literal survives.
	f, diags := hclsyntax.ParseConfig([]byte(got), "v.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	attrs, _ := f.Body.JustAttributes()
	v, diags := attrs["note"].Expr.Value(nil)
	if diags.HasErrors() || v.AsString() != `a "quoted" ${x} \ line` {
		t.Fatalf("note reads back as %#v (%v)", v, diags)
	}
}

func TestVariablesErrors(t *testing.T) {
	for name, c := range map[string]struct {
		files []VarFile
		vars  []string
		want  string
	}{
		"no equals":  {vars: []string{"tag"}, want: `-var "tag": want name=value`},
		"bad name":   {vars: []string{"a b=1"}, want: "want name=value"},
		"bad file":   {files: []VarFile{{Name: "v.hcl", Content: []byte("tag = \n")}}, want: "v.hcl:1"},
		"block file": {files: []VarFile{{Name: "v.hcl", Content: []byte("job \"x\" {}\n")}}, want: "v.hcl:1"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Variables(nil, c.files, c.vars)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
}

// A -var the job file declares no variable for is reported, as `nomad job
// run` refuses it (Nomad's parse endpoint would ignore it, recorded on
// 2.0.5 by a stage that staged the default); a file that does not parse
// reports nothing (Nomad's parse then says why).
func TestUndeclared(t *testing.T) {
	t.Parallel()
	src := []byte("variable \"tag\" {\n  default = \"1\"\n}\nvariable \"tier\" {}\njob \"j\" {\n  meta {\n    nosuch = \"x\"\n  }\n}\n")
	if got := Undeclared(src, "j.nomad.hcl", []string{"tag=2", "nosuch=1", "tier=edge", "nosuch=2", "other=3"}); !slices.Equal(got, []string{"nosuch", "other"}) {
		t.Errorf("got %q, want nosuch and other", got)
	}
	if got := Undeclared(src, "j.nomad.hcl", []string{"tag=2"}); got != nil {
		t.Errorf("all declared: got %q", got)
	}
	if got := Undeclared([]byte("job \"x\" {\n"), "bad.hcl", []string{"tag=2"}); got != nil {
		t.Errorf("a file that does not parse: got %q, want nil", got)
	}
}
