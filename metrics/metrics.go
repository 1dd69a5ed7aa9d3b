// Package metrics owns prefetch run's Prometheus metrics: counters the loop
// drives through agent.Observer as things happen, and the images-by-state
// gauge read from the loop's snapshot at scrape time. It reads the agent
// (and the peer package's event names) and must not be imported by it; it
// serves nothing itself (status mounts Handler at /metrics).
package metrics

import (
	"net/http"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/peer"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the agent's Prometheus metrics. Images by state are computed
// from the snapshot at scrape time; the rest are counted as things happen.
type Metrics struct {
	Registry *prometheus.Registry

	pulls        *prometheus.CounterVec
	pullDuration *prometheus.HistogramVec
	reloads      *prometheus.CounterVec
	lastConfig   prometheus.Gauge
	imageEvents  prometheus.Counter
	dockerUp     prometheus.Gauge
	peerBytes    *prometheus.CounterVec
	peerSaves    prometheus.Counter
	peerServed   *prometheus.CounterVec
}

// New registers the metrics on a registry of their own, with the Go
// and process collectors, and the images-by-state gauge read from snapshot.
func New(snapshot func() agent.Snapshot) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		pulls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prefetch_pulls_total",
			Help: "Image fetches (pull of expected, else its sources, or a copy from a peer) by result (pulled, up to date, retagged, copied, present not refreshed, failed) and where the content came from (expected, source, peer, none).",
		}, []string{"result", "from"}),
		pullDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "prefetch_pull_duration_seconds",
			Help:    "How long fetching one image took, by result.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}, []string{"result"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prefetch_config_reloads_total",
			Help: "Config reloads by result: ok, unchanged (same content), failed (kept the last good config).",
		}, []string{"result"}),
		lastConfig: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "prefetch_config_last_success_timestamp_seconds",
			Help: "When the config in use was loaded, as a Unix timestamp.",
		}),
		imageEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "prefetch_docker_image_removals_total",
			Help: "Expected images Docker removed (Nomad's image GC, a docker rmi), each restored since or being restored.",
		}),
		dockerUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "prefetch_docker_up",
			Help: "1 while the Docker daemon answers, 0 from a failed call or a lost event subscription until it answers again (and before it first answered).",
		}),
		peerBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prefetch_peer_bytes_total",
			Help: "Bytes of image transfers between agents (the nomad peers block), by direction: served to peers, taken from them.",
		}, []string{"direction"}),
		peerSaves: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "prefetch_peer_saves_total",
			Help: "Docker saves this agent ran to serve peers; fewer than prefetch_peer_served_total is the peers that shared one.",
		}),
		peerServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prefetch_peer_served_total",
			Help: "Image transfers this agent served to peers, by result: whole, or failed (cut off: the peer stalled, fell behind the others sharing the save, or the save failed).",
		}, []string{"result"}),
	}
	m.peerServed.WithLabelValues(peer.EventWhole)
	m.peerServed.WithLabelValues(peer.EventFailed)
	m.peerBytes.WithLabelValues("served")
	m.peerBytes.WithLabelValues("taken")
	states := prometheus.NewDesc("prefetch_images", "Images in the config by state (wanted, pulling, present, failed).", []string{"state"}, nil)
	reg.MustRegister(m.pulls, m.pullDuration, m.reloads, m.lastConfig, m.imageEvents, m.dockerUp, m.peerBytes, m.peerSaves, m.peerServed,
		newImageCollector(snapshot),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectorFunc{desc: states, collect: func(ch chan<- prometheus.Metric) {
			counts := map[string]int{agent.StateWanted: 0, agent.StatePulling: 0, agent.StatePresent: 0, agent.StateFailed: 0}
			for _, img := range snapshot().Images {
				counts[img.State]++
			}
			for state, n := range counts {
				ch <- prometheus.MustNewConstMetric(states, prometheus.GaugeValue, float64(n), state)
			}
		}},
	)
	return m
}

// Fetched records one image's fetch.
func (m *Metrics) Fetched(result, from string, d time.Duration) {
	m.pulls.WithLabelValues(result, from).Inc()
	m.pullDuration.WithLabelValues(result).Observe(d.Seconds())
}

// PeerBytes counts bytes of peer transfers: direction "served" or "taken".
func (m *Metrics) PeerBytes(direction string, n int64) {
	m.peerBytes.WithLabelValues(direction).Add(float64(n))
}

// PeerServe counts what the peer server did (peer.Server.Count's events):
// a save run to serve peers, or a transfer's end, whole or failed.
func (m *Metrics) PeerServe(event string) {
	if event == peer.EventSave {
		m.peerSaves.Inc()
		return
	}
	m.peerServed.WithLabelValues(event).Inc()
}

// Reloaded records a config reload; ok, unchanged or failed.
func (m *Metrics) Reloaded(result string, at time.Time) {
	m.reloads.WithLabelValues(result).Inc()
	if result == "ok" {
		m.lastConfig.Set(float64(at.UnixNano()) / 1e9)
	}
}

// ImageRemoved records that Docker removed an expected image.
func (m *Metrics) ImageRemoved() { m.imageEvents.Inc() }

// DockerUp records whether the Docker daemon answers.
func (m *Metrics) DockerUp(up bool) {
	if up {
		m.dockerUp.Set(1)
	} else {
		m.dockerUp.Set(0)
	}
}

type collectorFunc struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }

var _ agent.Observer = (*Metrics)(nil)

// Handler serves the metrics in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
