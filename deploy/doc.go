// Package deploy holds what an operator imports to watch prefetch and
// eventlog, and the tests that keep it honest; it has no Go API.
//
//   - prometheus/prefetch-rules.yml: alerting rules (an image failing past
//     a threshold, a config that does not load, Docker unreachable, an
//     agent down, eventlog unable to follow Nomad or losing events);
//   - prometheus/prefetch-rules.test.yml: their `promtool test rules` cases;
//   - prometheus/scrape.yml: an example scrape configuration finding both
//     programs through Nomad's service catalog, with the bearer token
//     prefetch's /metrics needs on a node's address;
//   - grafana/prefetch.json: a dashboard (per node and per image states,
//     fetches by result, reloads, eventlog's throughput and lag).
//
// The tests run the real promtool (Debian's prometheus package; under
// CI=true its absence fails them) and check every metric the rules and the
// dashboard name, and every series the rule tests feed, against the real
// /metrics of both programs: prefetch's metrics package and eventlog's
// server, scraped in-process. It imports them only in its tests.
package deploy
