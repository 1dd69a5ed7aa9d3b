package metrics

import (
	"strconv"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/prometheus/client_golang/prometheus"
)

// imageCollector exports, at scrape time, what the snapshot says of each
// image and of the config, for alerts and dashboards that name an image:
//
//   - prefetch_image_state{image, expected, state}: 1, one series per
//     image, labelled with its current state;
//   - prefetch_image_present{image, expected}: 1 when expected is present
//     locally (the agent's Missing rule, what /readyz counts), else 0;
//   - prefetch_image_failing_since_timestamp_seconds{image, expected}: when
//     the image's current run of failures began, only while it lasts (a
//     retry in flight does not end it, so an alert's `for` is not reset);
//   - prefetch_config_error: 1 while the config file on disk can't be used
//     (the last good config is kept), else 0.
//
// and, only while the config has a nomad block (discovery):
//
//   - prefetch_discovered_images: images kept for Nomad's jobs;
//   - prefetch_discovered_images_max: the nomad block's max_images;
//   - prefetch_discovered_images_left_out: images the jobs name here that
//     max_images leaves out;
//   - prefetch_nomad_stream_up: 1 while the Job events are followed;
//   - prefetch_nomad_last_index: the last Nomad index applied;
//   - prefetch_yielding: 1 while background pulls are held back for the
//     pulls of tasks starting on this node (foreground first), else 0;
//   - prefetch_yield_waiting_images: the images those tasks wait for;
//   - prefetch_yield_episodes_total, prefetch_yield_cancelled_pulls_total:
//     the times yielding began, and the background pulls it cancelled;
//   - prefetch_node_allocations_up: 1 while this node's allocations are
//     followed, else 0.
//
// Their cardinality is one to three series per image kept: the config's,
// and at most max_images (plus the infra image) discovered ones, since any
// job submitter chooses those; what is left out is only counted.
type imageCollector struct {
	snapshot                              func() agent.Snapshot
	state, present, failingSince, cfgErr  *prometheus.Desc
	discovered, nomadUp, nomadIndex       *prometheus.Desc
	discoveredMax, leftOut, source        *prometheus.Desc
	yielding, yieldWaiting, yieldEpisodes *prometheus.Desc
	yieldCancelled, allocsUp              *prometheus.Desc
}

func newImageCollector(snapshot func() agent.Snapshot) *imageCollector {
	labels := []string{"image", "expected"}
	return &imageCollector{
		snapshot: snapshot,
		state: prometheus.NewDesc("prefetch_image_state",
			"Each image in the config, 1, labelled with its state (wanted, pulling, present, failed).", append(labels, "state"), nil),
		present: prometheus.NewDesc("prefetch_image_present",
			"1 when the image's expected reference is present locally, else 0 (what /readyz counts).", labels, nil),
		failingSince: prometheus.NewDesc("prefetch_image_failing_since_timestamp_seconds",
			"When the image's current run of failed fetches began, as a Unix timestamp; absent while it is not failing.", labels, nil),
		discovered: prometheus.NewDesc("prefetch_discovered_images",
			"Images kept because a Nomad job that can run on this node names them (discovery, the nomad block; absent without it).", nil, nil),
		discoveredMax: prometheus.NewDesc("prefetch_discovered_images_max",
			"The most images discovery keeps for Nomad's jobs (the nomad block's max_images; absent without discovery).", nil, nil),
		leftOut: prometheus.NewDesc("prefetch_discovered_images_left_out",
			"Images Nomad's jobs that can run here name but max_images leaves out, the newest jobs' (/v1/status nomad.left_out_images lists them; absent without discovery).", nil, nil),
		nomadUp: prometheus.NewDesc("prefetch_nomad_stream_up",
			"1 while discovery follows Nomad's Job events, 0 while it can't (the last known images are kept); absent without discovery.", nil, nil),
		source: prometheus.NewDesc("prefetch_nomad_stream_source",
			"With the relay on (nomad relay block): 1, labelled with where discovery follows the Job events from (relay: the agent the relay lock names; nomad: Nomad itself, no relay answering; none: no relay known yet), and whether this agent is the relay (self); absent with the relay off.", []string{"source", "self"}, nil),
		nomadIndex: prometheus.NewDesc("prefetch_nomad_last_index",
			"The last Nomad index discovery applied; absent without discovery.", nil, nil),
		yielding: prometheus.NewDesc("prefetch_yielding",
			"1 while the agent holds its background pulls back because a task starting on this node waits for an image that is not present (Nomad is pulling it), else 0; absent without a nomad block. /v1/status foreground.why says for which.", nil, nil),
		yieldWaiting: prometheus.NewDesc("prefetch_yield_waiting_images",
			"Images tasks starting on this node wait for that are not present; absent without a nomad block.", nil, nil),
		yieldEpisodes: prometheus.NewDesc("prefetch_yield_episodes_total",
			"Times the agent began yielding to Nomad's pulls; absent without a nomad block.", nil, nil),
		yieldCancelled: prometheus.NewDesc("prefetch_yield_cancelled_pulls_total",
			"Background pulls cancelled to yield to Nomad's pulls (each retried when yielding ends); absent without a nomad block.", nil, nil),
		allocsUp: prometheus.NewDesc("prefetch_node_allocations_up",
			"1 while this node's allocations are followed (to yield to Nomad's pulls), else 0; absent without a nomad block.", nil, nil),
		cfgErr: prometheus.NewDesc("prefetch_config_error",
			"1 while the config file on disk can't be loaded (the last good config is in use; /v1/status config_error says why), else 0.", nil, nil),
	}
}

func (c *imageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.state
	ch <- c.present
	ch <- c.failingSince
	ch <- c.cfgErr
	ch <- c.discovered
	ch <- c.nomadUp
	ch <- c.nomadIndex
	ch <- c.source
	ch <- c.discoveredMax
	ch <- c.leftOut
	ch <- c.yielding
	ch <- c.yieldWaiting
	ch <- c.yieldEpisodes
	ch <- c.yieldCancelled
	ch <- c.allocsUp
}

func (c *imageCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.snapshot()
	missing := map[string]bool{}
	for _, img := range s.Missing() {
		missing[img.Expected] = true
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, img := range s.Images {
		gauge(c.state, 1, img.Name, img.Expected, img.State)
		present := 1.0
		if missing[img.Expected] {
			present = 0
		}
		gauge(c.present, present, img.Name, img.Expected)
		if img.FailingSince != nil {
			gauge(c.failingSince, float64(img.FailingSince.UnixNano())/1e9, img.Name, img.Expected)
		}
	}
	broken := 0.0
	if s.ConfigError != "" {
		broken = 1
	}
	gauge(c.cfgErr, broken)
	if n := s.Nomad; n != nil {
		up := 0.0
		if n.Live {
			up = 1
		}
		gauge(c.discovered, float64(n.Images))
		gauge(c.discoveredMax, float64(n.MaxImages))
		gauge(c.leftOut, float64(n.LeftOut))
		gauge(c.nomadUp, up)
		gauge(c.nomadIndex, float64(n.Index))
		if r := n.Relay; r != nil {
			gauge(c.source, 1, r.Source, strconv.FormatBool(r.Self))
		}
	}
	if f := s.Foreground; f != nil {
		b := func(v bool) float64 {
			if v {
				return 1
			}
			return 0
		}
		gauge(c.yielding, b(f.Yielding))
		gauge(c.yieldWaiting, float64(len(f.Waiting)))
		gauge(c.allocsUp, b(f.Live))
		ch <- prometheus.MustNewConstMetric(c.yieldEpisodes, prometheus.CounterValue, float64(f.Episodes))
		ch <- prometheus.MustNewConstMetric(c.yieldCancelled, prometheus.CounterValue, float64(f.Cancelled))
	}
}
