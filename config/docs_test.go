package config

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-units"
)

// docs/configuration.md's table says the defaults and bounds this package
// enforces: every row a bound or a default lives in here is checked
// against it, so neither can change alone.
func TestConfigurationDocMatchesBounds(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		cells := strings.Split(line, " | ")
		if len(cells) < 3 || !strings.HasPrefix(cells[0], "| `") {
			continue
		}
		name := strings.Trim(strings.TrimSpace(strings.TrimPrefix(cells[0], "|")), "`")
		rows[name] = cells[1:3]
	}
	defaults := map[string]time.Duration{
		"pull_timeout": DefaultPullTimeout, "stall_timeout": DefaultStallTimeout,
		"resync_interval": DefaultResyncInterval, "retry_initial": DefaultRetryInitial,
		"retry_max": DefaultRetryMax, "alert_after": DefaultAlertAfter,
	}
	check := func(name, def, allowed string) {
		t.Helper()
		row, ok := rows[name]
		switch {
		case !ok:
			t.Errorf("docs/configuration.md has no row for %s", name)
		case row[0] != def:
			t.Errorf("docs/configuration.md: %s default %s, the code's is %s", name, row[0], def)
		case !strings.HasPrefix(row[1], allowed):
			t.Errorf("docs/configuration.md: %s allowed %q, the code's bounds are %s", name, row[1], allowed)
		}
	}
	for _, l := range durationLimits {
		def, ok := defaults[l.name]
		if !ok {
			t.Fatalf("no default known for %s: add it to this test", l.name)
		}
		check(l.name, fmt.Sprintf("`%q`", shortDuration(def)), shortDuration(l.min)+" to "+shortDuration(l.max))
	}
	check("concurrency", fmt.Sprint(DefaultConcurrency), fmt.Sprintf("%d to %d", MinConcurrency, MaxConcurrency))
	check("  max_images", fmt.Sprint(DefaultMaxDiscoveredImages), fmt.Sprintf("%d to %d", 1, MaxDiscoveredImages))
	check("  background_pulls", fmt.Sprint(DefaultBackgroundPulls), fmt.Sprintf("%d to %d", 1, MaxBackgroundPulls))
	check("    lock_path", fmt.Sprintf("`%q`", DefaultRelayLockPath), "a Nomad variable path")
	check("    audience", fmt.Sprintf("`%q`", DefaultRelayAudience), "")
	check("    history_bytes", fmt.Sprint(DefaultRelayHistoryBytes), fmt.Sprintf("%d to %d", MinRelayHistoryBytes, MaxRelayHistoryBytes))
	check("    max_subscribers", fmt.Sprint(DefaultRelayMaxSubscribers), fmt.Sprintf("%d to %d", 1, MaxRelayMaxSubscribers))
	check("    fallback_after", fmt.Sprintf("`%q`", shortDuration(DefaultRelayFallbackAfter)), shortDuration(MinRelayFallbackAfter)+" to "+shortDuration(MaxRelayFallbackAfter))
	check("    lock_ttl", fmt.Sprintf("`%q`", shortDuration(DefaultRelayLockTTL)), "up to 24h")
	check("    order", fmt.Sprintf("`%q`", PeersLast), fmt.Sprintf("`%q` or `%q`", PeersFirst, PeersLast))
	check("    wait", fmt.Sprintf("`%q`", shortDuration(DefaultPeersWait)), "up to "+shortDuration(MaxPeersWait))
	check("    max_serving", fmt.Sprint(DefaultPeersMaxServing), fmt.Sprintf("%d to %d", 1, MaxPeersMaxServing))
	check("    max_size", fmt.Sprintf("`%q`", units.BytesSize(DefaultPeersMaxSize)), "at least "+units.BytesSize(MinPeersMaxSize))
}
