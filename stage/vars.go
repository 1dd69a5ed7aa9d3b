package stage

import (
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// VarFile is a -var-file's name and content.
type VarFile struct {
	Name    string
	Content []byte
}

// Variables is the Variables text of a /v1/jobs/parse request (HCL, "as if
// it were the content of a variables file") from what `nomad job run`
// takes, lowest precedence first: the NOMAD_VAR_name=value entries of env,
// each -var-file in order, then each -var name=value. A later value
// replaces an earlier one of the same name (Nomad refuses a name given
// twice in one file). -var and NOMAD_VAR_ values are strings, as HCL
// converts them to the variable's declared type; a list or a map goes in a
// -var-file. A file that does not parse is an error naming it with line
// and column.
func Variables(env []string, files []VarFile, vars []string) (string, error) {
	var order []string
	values := map[string]string{}
	set := func(name, expr string) {
		if _, ok := values[name]; !ok {
			order = append(order, name)
		}
		values[name] = expr
	}
	for _, kv := range env {
		if rest, ok := strings.CutPrefix(kv, "NOMAD_VAR_"); ok {
			if name, value, ok := strings.Cut(rest, "="); ok && hclsyntax.ValidIdentifier(name) {
				set(name, quote(value))
			}
		}
	}
	for _, f := range files {
		file, diags := hclsyntax.ParseConfig(f.Content, f.Name, hcl.InitialPos)
		if diags.HasErrors() {
			return "", fmt.Errorf("-var-file %w", diags)
		}
		attrs, diags := file.Body.JustAttributes()
		if diags.HasErrors() {
			return "", fmt.Errorf("-var-file %w", diags)
		}
		names := make([]string, 0, len(attrs))
		for name := range attrs {
			names = append(names, name)
		}
		slices.SortFunc(names, func(a, b string) int { return attrs[a].Range.Start.Byte - attrs[b].Range.Start.Byte })
		for _, name := range names {
			set(name, string(attrs[name].Expr.Range().SliceBytes(f.Content)))
		}
	}
	for _, kv := range vars {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !hclsyntax.ValidIdentifier(name) {
			return "", fmt.Errorf("-var %q: want name=value, the name a variable's", kv)
		}
		set(name, quote(value))
	}
	var b strings.Builder
	for _, name := range order {
		fmt.Fprintf(&b, "%s = %s\n", name, values[name])
	}
	return b.String(), nil
}

// quote is s as an HCL string literal: escapes, and no template
// interpolation or directive.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case (c == '$' || c == '%') && i+1 < len(s) && s[i+1] == '{':
			b.WriteByte(c)
			b.WriteByte(c) // $${ and %%{ are the literal ${ and %{
		case c < 0x20:
			fmt.Fprintf(&b, `\u%04x`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// Undeclared returns the names of vars (-var name=value) that the job file
// src (its name is file) declares no variable block for, in order: `nomad
// job run` refuses them ("Undefined -var variable"), while Nomad's parse
// endpoint takes its Variables as a variables file and ignores them, so a
// misspelt -var would stage the default. A file that does not parse here
// declares nothing known: nil, and Nomad's parse says what is wrong.
func Undeclared(src []byte, file string, vars []string) []string {
	f, diags := hclsyntax.ParseConfig(src, file, hcl.InitialPos)
	if diags.HasErrors() {
		return nil
	}
	body, ok := f.Body.(*hclsyntax.Body)
	if !ok {
		return nil
	}
	declared := map[string]bool{}
	for _, b := range body.Blocks {
		if b.Type == "variable" && len(b.Labels) == 1 {
			declared[b.Labels[0]] = true
		}
	}
	var out []string
	for _, kv := range vars {
		name, _, _ := strings.Cut(kv, "=")
		if !declared[name] && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}
