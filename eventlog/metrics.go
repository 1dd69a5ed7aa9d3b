package eventlog

import (
	"fmt"
	"net/http"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/nomad"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// collector exposes the Streamer's counters at scrape time: the stream
// itself only bumps atomics, so metrics cost it nothing per event.
type collector struct {
	stats *nomad.Stats
	ha    *haState // nil without HA
	start time.Time
	now   func() time.Time

	events, frames, heartbeats, duplicates, reconnects, refusals, gaps, resets, skipped, bytes *prometheus.Desc
	lastIndex, flushedIndex, sinceFrame, live                                                  *prometheus.Desc
	haActive, haLost, haCheckpoint                                                             *prometheus.Desc
}

func newCollector(stats *nomad.Stats, ha *haState, now func() time.Time) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("eventlog_"+name, help, labels, nil)
	}
	return &collector{
		stats: stats, ha: ha, start: now(), now: now,
		events:       d("events_written_total", "Events written to stdout, by topic.", "topic"),
		frames:       d("frames_written_total", "Frames (raft indexes) written to stdout."),
		heartbeats:   d("heartbeats_total", "Heartbeats received."),
		duplicates:   d("duplicate_events_dropped_total", "Events dropped because they repeated one already written in the same frame."),
		reconnects:   d("reconnects_total", "Subscriptions started after the first."),
		refusals:     d("refusals_total", "Subscriptions Nomad refused (token, ACL, event broker)."),
		gaps:         d("gaps_total", "Resumes where Nomad no longer buffered the last written index: events may be lost."),
		resets:       d("history_resets_total", "Resumes where Nomad's index went backwards (cluster rebuilt)."),
		skipped:      d("frames_skipped_total", "Frames skipped because they were longer than -max-frame-bytes: their events are lost."),
		bytes:        d("stream_bytes_read_total", "Bytes read from the event stream."),
		lastIndex:    d("last_index", "Index of the last frame written."),
		flushedIndex: d("flushed_index", "Index of the last frame flushed to stdout (what the state file holds)."),
		sinceFrame:   d("seconds_since_last_frame", "Seconds since the last frame was received (since start before the first)."),
		live:         d("subscription_live", "1 while a subscription is live."),
		haActive:     d("ha_active", "1 while this instance holds the HA lock and streams, 0 while it is a standby."),
		haLost:       d("ha_lock_lost_total", "Times this instance lost the HA lock while holding it (it stopped writing, and waits as a standby)."),
		haCheckpoint: d("ha_checkpoint_index", "The index this instance last wrote to the HA lock's variable: the last frame it wrote to stdout."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats.Snapshot()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	for topic, n := range s.Topics {
		counter(c.events, n, topic)
	}
	counter(c.frames, s.Frames)
	counter(c.heartbeats, s.Heartbeats)
	counter(c.duplicates, s.Duplicates)
	counter(c.reconnects, s.Reconnects)
	counter(c.refusals, s.Refusals)
	counter(c.gaps, s.Gaps)
	counter(c.resets, s.Resets)
	counter(c.skipped, s.Skipped)
	counter(c.bytes, s.BytesRead)
	gauge(c.lastIndex, float64(s.LastIndex))
	gauge(c.flushedIndex, float64(s.FlushedIndex))
	since := c.start
	if !s.LastFrame.IsZero() {
		since = s.LastFrame
	}
	gauge(c.sinceFrame, c.now().Sub(since).Seconds())
	gauge(c.live, b2f(s.Live))
	if c.ha != nil {
		gauge(c.haActive, b2f(c.ha.active.Load()))
		counter(c.haLost, c.ha.lost.Load())
		gauge(c.haCheckpoint, float64(c.ha.checkpoint.Load()))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// handler serves /metrics from a registry of its own and /healthz.
// Healthy: a subscription is live, or the stream is reconnecting and has
// been down for less than grace (the backoff cap): a blip is not an outage.
// A refused subscription or a longer outage is unhealthy. In HA mode (ha
// not nil) a standby is healthy too, unless its lock requests are refused
// or have failed for longer than grace.
func handler(stats *nomad.Stats, ha *haState, now func() time.Time, grace time.Duration) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(stats, ha, now), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		status, msg := health(stats.Snapshot(), now(), grace)
		if ha != nil && !ha.active.Load() {
			status, msg = ha.health(now(), grace)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		fmt.Fprintln(w, msg)
	})
	return mux
}

func health(s nomad.StatsSnapshot, now time.Time, grace time.Duration) (int, string) {
	switch {
	case s.Live:
		return http.StatusOK, "live"
	case s.Refused:
		return http.StatusServiceUnavailable, "Nomad refuses the subscription"
	case s.DownSince.IsZero():
		return http.StatusOK, "connecting"
	case now.Sub(s.DownSince) < grace:
		return http.StatusOK, fmt.Sprintf("reconnecting (down for %s)", now.Sub(s.DownSince).Round(time.Second))
	}
	return http.StatusServiceUnavailable, fmt.Sprintf("down for %s", now.Sub(s.DownSince).Round(time.Second))
}
