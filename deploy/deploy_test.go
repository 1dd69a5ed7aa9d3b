package deploy

import (
	"cmp"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/eventlog"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
	"github.com/nomad-prefetch/nomad-prefetch/metrics"
	"github.com/nomad-prefetch/nomad-prefetch/status"
	"go.yaml.in/yaml/v3"
)

const (
	rulesFile     = "prometheus/prefetch-rules.yml"
	ruleTestsFile = "prometheus/prefetch-rules.test.yml"
	scrapeFile    = "prometheus/scrape.yml"
	dashboardFile = "grafana/prefetch.json"
)

// promtool finds promtool, skipping the test without it, or failing it
// under CI=true (a green CI must mean the rules were tested).
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("promtool not found (apt-get install prometheus): %v", err)
	}
	t.Skipf("promtool not found (apt-get install prometheus): %v", err)
	return ""
}

func TestPromtool(t *testing.T) {
	t.Parallel()
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", "prefetch-rules.yml"},
		{"test", "rules", "prefetch-rules.test.yml"},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = "prometheus"
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// exported is what the programs' /metrics hold: each sample name with the
// label names it carries.
type exported map[string]map[string]bool

var sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? `)
var labelRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"`)

func (e exported) add(t *testing.T, text string) {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("not a sample line: %q", line)
		}
		if e[m[1]] == nil {
			e[m[1]] = map[string]bool{}
		}
		for _, l := range labelRE.FindAllStringSubmatch(m[2], -1) {
			e[m[1]][l[1]] = true
		}
	}
}

// scrapePrefetch is prefetch run's /metrics (the metrics package, as the
// status server mounts it) after the loop has told it everything it can:
// a snapshot with a present image, a failing one and a broken config.
func scrapePrefetch(t *testing.T) string {
	t.Helper()
	now := time.Now()
	since := now.Add(-time.Hour)
	snap := agent.Snapshot{Config: "c.hcl", ConfigLoaded: now, ConfigError: "c.hcl:1:1: broken", Images: []agent.ImageStatus{
		{Name: "a", Expected: "reg:5000/a:1", State: agent.StatePresent, ImageID: "sha256:a"},
		{Name: "b", Expected: "reg:5000/b:1", State: agent.StateFailed, FailingSince: &since},
	}, Nomad: &agent.DiscoveryStatus{Listed: true, Images: 1, Index: 42, MaxImages: 100}} // discovery on: its series too
	m := metrics.New(func() agent.Snapshot { return snap })
	var obs agent.Observer = m
	obs.Fetched(string(agent.Pulled), "expected", time.Second)
	obs.Fetched(string(agent.Failed), "none", time.Second)
	obs.Reloaded("ok", now)
	obs.ImageRemoved()
	obs.DockerUp(true)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// scrapeEventlog is eventlog's /metrics, served by eventlog.Run itself
// after one event from an in-process Nomad.
func scrapeEventlog(t *testing.T) string {
	t.Helper()
	srv := nomadtest.StartT(t, nomadtest.Options{})
	srv.Publish(nomadtest.Event{Topic: "Job", Type: "JobRegistered", Key: "web", Namespace: "default", Payload: json.RawMessage(`{"Job":{"ID":"web"}}`)})
	logs := nomadtest.NewBuffer()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- eventlog.Run(ctx, eventlog.Options{
			Address: srv.URL, Namespace: "*", Index: 0, StateInterval: time.Second, HeartbeatTimeout: time.Minute,
			AlertAfter: time.Hour, MaxFrameBytes: 1 << 20, Listen: "127.0.0.1:0", Stdout: io.Discard,
			Logger: slog.New(slog.NewJSONHandler(logs, nil)),
		})
	}()
	defer func() { cancel(); <-done }()
	addrRE := regexp.MustCompile(`"msg":"serving /healthz and /metrics","address":"(127\.0\.0\.1:\d+)"`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := addrRE.FindStringSubmatch(logs.String()); m != nil {
			body := get(t, "http://"+m[1]+"/metrics")
			if strings.Contains(body, "eventlog_events_written_total{") {
				return body
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("eventlog wrote no event within 30s; its logs:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// scraped is both programs' /metrics, plus `up`, which Prometheus makes
// for every target, with the labels every scrape adds.
func scraped(t *testing.T) exported {
	t.Helper()
	e := exported{}
	e.add(t, scrapePrefetch(t))
	e.add(t, scrapeEventlog(t))
	e["up"] = map[string]bool{}
	for _, labels := range e {
		labels["job"], labels["instance"] = true, true
	}
	return e
}

// metricNames returns the metric names a PromQL expression selects: what
// is left once strings, label matchers, ranges, grouping clauses, function
// calls, keywords, numbers and Grafana's $variables are taken out.
func metricNames(expr string) []string {
	for _, re := range []string{
		`\$\{?\w+\}?`,                         // Grafana variables
		`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`, // strings
		`\{[^{}]*\}`,                          // label matchers
		`\[[^\[\]]*\]`,                        // ranges
		`(?i)\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`, // grouping
	} {
		expr = regexp.MustCompile(re).ReplaceAllString(expr, " ")
	}
	keywords := map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true, "atan2": true}
	var names []string
	for _, loc := range regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`).FindAllStringIndex(expr, -1) {
		name := expr[loc[0]:loc[1]]
		if before := expr[:loc[0]]; before != "" && strings.ContainsAny(before[len(before)-1:], "0123456789.") {
			continue // an exponent: 1e9
		}
		if strings.HasPrefix(strings.TrimLeft(expr[loc[1]:], " \t\n"), "(") || keywords[strings.ToLower(name)] {
			continue // a function or an aggregation
		}
		names = append(names, name)
	}
	return names
}

func TestMetricNames(t *testing.T) {
	t.Parallel()
	for expr, want := range map[string]string{
		`(time() - prefetch_image_failing_since_timestamp_seconds > 30 * 60) and on (job, instance) (prefetch_image_present == 0)`:            "prefetch_image_failing_since_timestamp_seconds prefetch_image_present",
		`histogram_quantile(0.9, sum by (le, result) (rate(prefetch_pull_duration_seconds_bucket{instance=~"$instance"}[$__rate_interval])))`: "prefetch_pull_duration_seconds_bucket",
		`absent(up{job="prefetch"})`:                                      "up",
		`count(x == 0) or vector(0)`:                                      "x",
		`sum(rate(a[5m])) by (instance) / ignoring(le) b offset 1h > 1e9`: "a b",
	} {
		if got := strings.Join(metricNames(expr), " "); got != want {
			t.Errorf("metricNames(%q): got %q, want %q", expr, got, want)
		}
	}
}

type rulesDoc struct {
	Groups []struct {
		Name  string
		Rules []struct {
			Alert, Expr string
		}
	}
}

type ruleTestsDoc struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		InputSeries []struct {
			Series string
		} `yaml:"input_series"`
		AlertRuleTest []struct {
			Alertname string
			ExpAlerts []any `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	}
}

func readYAML(t *testing.T, name string, out any) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, out); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// Every metric a rule or the dashboard names is one the programs export;
// every series the rule tests feed is shaped like one they export; every
// alert has a test that fires it.
func TestNamesMatchTheRealMetrics(t *testing.T) {
	t.Parallel()
	e := scraped(t)
	check := func(where, expr string) {
		names := metricNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: %q selects no metric", where, expr)
		}
		for _, n := range names {
			if e[n] == nil {
				t.Errorf("%s names %s, which neither prefetch nor eventlog exports (they export %s)", where, n, strings.Join(slices.Sorted(maps.Keys(e)), " "))
			}
		}
	}

	var rules rulesDoc
	readYAML(t, rulesFile, &rules)
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = false
			check(rulesFile+": "+r.Alert, r.Expr)
		}
	}
	if len(alerts) < 9 {
		t.Errorf("%s: %d alerts, want the 9 documented", rulesFile, len(alerts))
	}

	var tests ruleTestsDoc
	readYAML(t, ruleTestsFile, &tests)
	seriesRE := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?$`)
	for _, tc := range tests.Tests {
		for _, in := range tc.InputSeries {
			m := seriesRE.FindStringSubmatch(in.Series)
			if m == nil || e[m[1]] == nil {
				t.Errorf("%s: input series %s is not one the programs export", ruleTestsFile, in.Series)
				continue
			}
			for _, l := range labelRE.FindAllStringSubmatch(m[2], -1) {
				if !e[m[1]][l[1]] {
					t.Errorf("%s: input series %s has label %s, which the real %s does not carry (it has %v)", ruleTestsFile, in.Series, l[1], m[1], slices.Sorted(maps.Keys(e[m[1]])))
				}
			}
			if !strings.Contains(m[2], "job=") || !strings.Contains(m[2], "instance=") {
				t.Errorf("%s: input series %s lacks the job and instance labels a scrape adds", ruleTestsFile, in.Series)
			}
		}
		for _, a := range tc.AlertRuleTest {
			if _, ok := alerts[a.Alertname]; !ok {
				t.Errorf("%s tests alert %s, which %s does not define", ruleTestsFile, a.Alertname, rulesFile)
			}
			if len(a.ExpAlerts) > 0 {
				alerts[a.Alertname] = true
			}
		}
	}
	for name, fired := range alerts {
		if !fired {
			t.Errorf("%s: no test case fires %s", ruleTestsFile, name)
		}
	}

	for _, p := range dashboardPanels(t) {
		for _, expr := range p.exprs {
			check(dashboardFile+": panel "+p.title, expr)
		}
	}
}

type panel struct {
	title string
	exprs []string
}

// dashboardPanels reads the dashboard, checking what Grafana needs of it:
// unique panel IDs, a position for each, a query for each panel but rows,
// and template variables that read metrics the programs export.
func dashboardPanels(t *testing.T) []panel {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title, UID string
		Panels     []struct {
			ID      int
			Type    string
			Title   string
			GridPos *struct{ H, W, X, Y int }
			Targets []struct {
				Expr, RefID string
				Datasource  struct{ Type, UID string }
			}
		}
		Templating struct {
			List []struct {
				Name, Type, Definition string
			}
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("%s: no title or uid", dashboardFile)
	}
	ids := map[int]bool{}
	var out []panel
	for _, p := range d.Panels {
		if ids[p.ID] || p.ID == 0 {
			t.Errorf("%s: panel %q: id %d is zero or not unique", dashboardFile, p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("%s: panel %q has no place on the 24-column grid", dashboardFile, p.Title)
		}
		if p.Type == "row" {
			continue
		}
		pn := panel{title: p.Title}
		for _, tg := range p.Targets {
			if tg.Datasource.UID != "${datasource}" {
				t.Errorf("%s: panel %q reads datasource %q, want the ${datasource} variable", dashboardFile, p.Title, tg.Datasource.UID)
			}
			pn.exprs = append(pn.exprs, tg.Expr)
		}
		if len(pn.exprs) == 0 {
			t.Errorf("%s: panel %q has no query", dashboardFile, p.Title)
		}
		out = append(out, pn)
	}
	lv := regexp.MustCompile(`^label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*), *(\w+)\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := lv.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("%s: variable %s: %q is not label_values(metric, label)", dashboardFile, v.Name, v.Definition)
			continue
		}
		out = append(out, panel{title: "variable " + v.Name, exprs: []string{m[1]}})
	}
	return out
}

// The example scrape configuration's job names are the ones the rules
// match, and it keeps the services the job files register.
func TestScrapeConfig(t *testing.T) {
	t.Parallel()
	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			Authorization *struct {
				Type            string
				CredentialsFile string `yaml:"credentials_file"`
			}
			RelabelConfigs []struct {
				SourceLabels []string `yaml:"source_labels"`
				Regex        string
				Action       string
			} `yaml:"relabel_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, scrapeFile, &cfg)
	if !slices.Equal(cfg.RuleFiles, []string{"prefetch-rules.yml"}) {
		t.Errorf("rule_files %q, want the rules beside it", cfg.RuleFiles)
	}
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, job := range []string{"prefetch", "eventlog"} {
		if !strings.Contains(string(rules), `job="`+job+`"`) {
			t.Errorf("the rules do not match job=%q", job)
		}
		jobFile, err := os.ReadFile("../nomad/jobs/" + job + ".nomad.hcl")
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`(?m)^\s*name\s*=\s*"` + job + `"`).Match(jobFile) {
			t.Errorf("%s.nomad.hcl registers no service %q", job, job)
		}
		found := false
		for _, sc := range cfg.ScrapeConfigs {
			for _, rc := range sc.RelabelConfigs {
				if sc.JobName == job && rc.Action == "keep" && rc.Regex == job && slices.Equal(rc.SourceLabels, []string{"__meta_nomad_service"}) {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("%s: no scrape job %q keeping the service %q", scrapeFile, job, job)
		}
	}

	// prefetch's /metrics on a node's address answers the bearer token of
	// the agent's -status-token-file only: a scrape as configured (its
	// scheme, the credentials file's content) is let in, one without is not.
	for _, sc := range cfg.ScrapeConfigs {
		if sc.JobName != "prefetch" {
			continue
		}
		if sc.Authorization == nil || sc.Authorization.CredentialsFile == "" {
			t.Fatalf("%s: the prefetch scrape job has no authorization.credentials_file: every agent would refuse it", scrapeFile)
		}
		const token = "0123456789abcdef0123456789abcdef"
		path := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		tok, err := status.OpenToken(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		snap := func() agent.Snapshot { return agent.Snapshot{} }
		srv := httptest.NewServer(status.Endpoints{Snapshot: snap, Alive: func() bool { return true }, Metrics: metrics.New(snap).Handler()}.Public(tok))
		defer srv.Close()
		for _, auth := range []string{cmp.Or(sc.Authorization.Type, "Bearer") + " " + token, ""} {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if want := map[bool]int{true: http.StatusOK, false: http.StatusUnauthorized}[auth != ""]; resp.StatusCode != want {
				t.Errorf("a scrape with Authorization %q: %d, want %d", auth, resp.StatusCode, want)
			}
		}
	}
}
