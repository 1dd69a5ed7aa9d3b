package discovery

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/go-version"
	"github.com/hashicorp/nomad/api"
)

// node is what placement and interpolation need of this node.
type node struct {
	id, name, datacenter, pool, class string
	attrs, meta                       map[string]string
	// volumes are the node's host volumes by name, each true when it is
	// read-only.
	volumes map[string]bool
}

func newNode(n *api.Node) node {
	pool := n.NodePool
	if pool == "" {
		pool = "default"
	}
	volumes := map[string]bool{}
	for name, v := range n.HostVolumes {
		if v != nil {
			volumes[name] = v.ReadOnly
		}
	}
	return node{id: n.ID, name: n.Name, datacenter: n.Datacenter, pool: pool, class: n.NodeClass, attrs: n.Attributes, meta: n.Meta, volumes: volumes}
}

// volumesFit reports whether n has the host volumes group g mounts, as
// Nomad's scheduler checks them (scheduler/feasible: HostVolumeChecker):
// each request of type "host" needs a node volume named by its source, and
// a read-write one a volume that is not read-only; with per_alloc,
// allocation i needs source[i] (Nomad's AllocSuffix), so n fits when, for
// some i below the group's count, it has every per_alloc source[i] too.
// Only the node's own record is read: a dynamic host volume's access mode
// and a sticky volume's claims are not checked. CSI volumes are not
// checked at all (whether a node can mount one is its plugin's and its
// claims' to say): they don't restrict where images are fetched.
func (n node) volumesFit(g *api.TaskGroup) bool {
	var perAlloc []*api.VolumeRequest
	for _, v := range g.Volumes {
		switch {
		case v == nil || v.Type != "host":
		case v.PerAlloc:
			perAlloc = append(perAlloc, v)
		case !n.hasVolume(v.Source, v.ReadOnly):
			return false
		}
	}
	if len(perAlloc) == 0 {
		return true
	}
	count := 1
	if g.Count != nil {
		count = *g.Count
	}
	// The indexes to try are those of the node's volumes named after the
	// first per_alloc source: a node has few volumes, while a count is
	// whatever the job says.
	for name := range n.volumes {
		rest, ok := strings.CutPrefix(name, perAlloc[0].Source+"[")
		if !ok || !strings.HasSuffix(rest, "]") {
			continue
		}
		i, err := strconv.Atoi(strings.TrimSuffix(rest, "]"))
		if err != nil || i < 0 || i >= count || name != perAlloc[0].Source+suffix(i) {
			continue
		}
		if !slices.ContainsFunc(perAlloc, func(v *api.VolumeRequest) bool { return !n.hasVolume(v.Source+suffix(i), v.ReadOnly) }) {
			return true
		}
	}
	return false
}

// suffix is Nomad's AllocSuffix for allocation index i.
func suffix(i int) string { return "[" + strconv.Itoa(i) + "]" }

// hasVolume reports whether n has host volume name, and one that is not
// read-only unless readOnly.
func (n node) hasVolume(name string, readOnly bool) bool {
	ro, ok := n.volumes[name]
	return ok && (readOnly || !ro)
}

// platform is os/arch of the node, as Docker names platforms, or "" when
// its attributes don't say.
func (n node) platform() string {
	os, arch := n.attrs["kernel.name"], n.attrs["cpu.arch"]
	if os == "" || arch == "" {
		return ""
	}
	return os + "/" + arch
}

// resolve gives a constraint target's value as Nomad's scheduler does: a
// literal as is, ${node.*}, ${attr.*} and ${meta.*} from the node; found is
// false when the node has no such value.
func (n node) resolve(target string) (value string, found bool) {
	if !strings.HasPrefix(target, "${") {
		return target, true
	}
	switch target {
	case "${node.unique.id}":
		return n.id, true
	case "${node.unique.name}":
		return n.name, true
	case "${node.datacenter}":
		return n.datacenter, true
	case "${node.class}":
		return n.class, true
	case "${node.pool}":
		return n.pool, true
	}
	inner := strings.TrimSuffix(strings.TrimPrefix(target, "${"), "}")
	if k, ok := strings.CutPrefix(inner, "attr."); ok {
		v, ok := n.attrs[k]
		return v, ok
	}
	if k, ok := strings.CutPrefix(inner, "meta."); ok {
		v, ok := n.meta[k]
		return v, ok
	}
	return "", false
}

// verdict is what a constraint says of this node.
type verdict int

const (
	allows verdict = iota
	forbids
	undecided // an operator or target this agent can't evaluate
)

// check evaluates one constraint the way Nomad's scheduler does
// (scheduler/feasible: checkConstraint). Operators it does not know, and
// prerelease versions, are undecided: the job (or group) is skipped unless
// include_undecided, since every job submitter could otherwise make every
// node keep an image.
func (n node) check(c *api.Constraint) verdict {
	l, lFound := n.resolve(c.LTarget)
	r, rFound := n.resolve(c.RTarget)
	if strings.HasPrefix(c.LTarget, "${") && !lFound && !knownTarget(c.LTarget) {
		return undecided
	}
	both := lFound && rFound
	ok := false
	switch c.Operand {
	case "=", "==", "is", "":
		ok = both && l == r
	case "!=", "not":
		ok = !(lFound == rFound && l == r)
	case "<", "<=", ">", ">=":
		ok = both && order(c.Operand, l, r)
	case "is_set":
		ok = lFound
	case "is_not_set":
		ok = !lFound
	case "regexp":
		re, err := regexp.Compile(r)
		if err != nil {
			return undecided
		}
		ok = both && re.MatchString(l)
	case "set_contains", "set_contains_all":
		ok = both && containsAll(splitSet(l), splitSet(r))
	case "set_contains_any":
		ok = both && slices.ContainsFunc(splitSet(r), func(v string) bool { return slices.Contains(splitSet(l), v) })
	case "distinct_hosts", "distinct_property":
		return allows // about other allocations, not this node
	case "version", "semver":
		if !both {
			break
		}
		return versionMatch(c.Operand, l, r)
	default: // anything newer
		return undecided
	}
	if ok {
		return allows
	}
	return forbids
}

// versionMatch decides a version or semver constraint (op) as Nomad's
// scheduler does (scheduler/feasible: checkVersionMatch): the node's value
// parsed by hashicorp/go-version (v1.9.0, the version Nomad 2.0.5 builds
// with), "version" checked by go-version's own constraints (whose rule is
// that a prerelease only satisfies a constraint naming a prerelease of its
// own version), "semver" by semverCheck. A value or constraint that does not
// parse forbids, as there.
//
// Deciding these matters: Nomad adds ${attr.nomad.version} semver
// ">= 1.x" to every group using its services or variables, and
// ">= 1.7.0-a" to every group with a named workload identity (seen on a real
// 2.0.5: discovery used to leave such jobs undecided, the prefetch job's own
// among them).
func versionMatch(op, have, constraint string) verdict {
	v, err := version.NewVersion(have)
	if err != nil {
		return forbids
	}
	var ok bool
	if op == "semver" {
		ok, err = semverCheck(v, constraint)
	} else {
		var c version.Constraints
		if c, err = version.NewConstraint(constraint); err == nil {
			ok = c.Check(v)
		}
	}
	if err == nil && ok {
		return allows
	}
	return forbids
}

// semverTerm is one term of a semver constraint: an operator (none is "=")
// and a semantic version.
var semverTerm = regexp.MustCompile(`^\s*(!=|>=|<=|=|>|<)?\s*(` + version.SemverRegexpRaw + `)\s*$`)

// semverCheck checks v against a semver constraint as Nomad's semver
// operand does (helper/constraints/semver): comma-separated terms, all of
// which must hold, with the operators = != > < >= <= only, comparing in
// semantic-version order, where a prerelease is below its release and above
// every earlier version.
func semverCheck(v *version.Version, constraint string) (bool, error) {
	for _, term := range strings.Split(constraint, ",") {
		m := semverTerm.FindStringSubmatch(term)
		if m == nil {
			return false, fmt.Errorf("malformed semver constraint %q", term)
		}
		want, err := version.NewSemver(m[2])
		if err != nil {
			return false, err
		}
		c := v.Compare(want)
		var ok bool
		switch m[1] {
		case "", "=":
			ok = c == 0
		case "!=":
			ok = c != 0
		case ">":
			ok = c > 0
		case "<":
			ok = c < 0
		case ">=":
			ok = c >= 0
		case "<=":
			ok = c <= 0
		}
		if !ok {
			return false, nil
		}
	}
	return true, nil
}

// knownTarget says whether target names something a node may lack (an
// attribute or meta key: missing means "not set") rather than an
// interpolation this agent does not know.
func knownTarget(target string) bool {
	return strings.HasPrefix(target, "${attr.") || strings.HasPrefix(target, "${meta.") || strings.HasPrefix(target, "${node.")
}

func order(op, l, r string) bool {
	switch op {
	case "<":
		return l < r
	case "<=":
		return l <= r
	case ">":
		return l > r
	}
	return l >= r
}

func splitSet(s string) []string {
	parts := strings.Split(s, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// decide is what constraints cs say of the node together: forbids if one
// does, else undecided if one is (why names the first such), else allows.
func (n node) decide(cs []*api.Constraint) (v verdict, why string) {
	v = allows
	for _, c := range cs {
		if c == nil {
			continue
		}
		switch n.check(c) {
		case forbids:
			return forbids, ""
		case undecided:
			if v == allows {
				v, why = undecided, clip(fmt.Sprintf("constraint %s %s %q", c.LTarget, c.Operand, c.RTarget), 200)
			}
		}
	}
	return v, why
}

// clip bounds s, a string a job submitter chose, to max bytes.
func clip(s string, max int) string {
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "") + "..."
}

// glob compiles a glob where * matches any run of characters, / included,
// and ? one character, into an anchored regexp.
func glob(pattern string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// anyGlob reports whether s matches one of the globs.
func anyGlob(globs []*regexp.Regexp, s string) bool {
	return slices.ContainsFunc(globs, func(g *regexp.Regexp) bool { return g.MatchString(s) })
}
