package tracker

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/tracker/peerstore"
)

// metrics holds the label children resolved once: announces are hot.
type metrics struct {
	announceOK, announceStopped, announceFailure, announceError prometheus.Counter
	requests                                                    map[fileKind]resultCounters
	originOK, originClientError, originFailure                  prometheus.Counter
	metainfoWaiting                                             prometheus.Gauge
	storeErrors                                                 *prometheus.CounterVec
}

// resultCounters count metainfo or torrent requests by result.
type resultCounters struct{ hit, miss, err prometheus.Counter }

func newResultCounters(v *prometheus.CounterVec) resultCounters {
	return resultCounters{hit: v.WithLabelValues("hit"), miss: v.WithLabelValues("miss"), err: v.WithLabelValues("error")}
}

// storeError counts a failed peer store operation: announce, remove or ping.
func (m *metrics) storeError(op string) { m.storeErrors.WithLabelValues(op).Inc() }

func newMetrics(reg prometheus.Registerer, store peerstore.Store) *metrics {
	announces := counterVec("shoal_tracker_announces_total",
		"Announces by result: ok, stopped, failure (bad request), error (peer store).", "result")
	metainfo := counterVec("shoal_tracker_metainfo_requests_total",
		"Metainfo requests by result: hit (cache), miss (fetched from an origin), error.", "result")
	torrents := counterVec("shoal_tracker_torrent_requests_total",
		"Standard torrent (.torrent) requests by result: hit (cache), miss (fetched from an origin), error.", "result")
	origin := counterVec("shoal_tracker_origin_requests_total",
		"Metainfo and torrent requests sent to origins by result: ok, client_error (4xx: passed on, or for a torrent the next origin tried), failure (tried the next origin).", "result")
	waiting := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "shoal_tracker_metainfo_waiting",
		Help: "Metainfo and torrent requests waiting for an origin's answer (coalesced or not).",
	})
	storeErrors := counterVec("shoal_tracker_peer_store_errors_total",
		"Failed peer store operations by op: announce, remove (event=stopped), ping (readiness).", "op")
	reg.MustRegister(announces, metainfo, torrents, origin, waiting, storeErrors)
	for _, op := range []string{"announce", "remove", "ping"} {
		storeErrors.WithLabelValues(op) // export zeros before the first error
	}
	if l, ok := store.(interface{ Len() int }); ok {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_tracker_peers",
			Help: "Peers held by the in-memory peer store (all swarms).",
		}, func() float64 { return float64(l.Len()) }))
	}
	return &metrics{
		announceOK:        announces.WithLabelValues("ok"),
		announceStopped:   announces.WithLabelValues("stopped"),
		announceFailure:   announces.WithLabelValues("failure"),
		announceError:     announces.WithLabelValues("error"),
		requests:          map[fileKind]resultCounters{kindMetainfo: newResultCounters(metainfo), kindTorrent: newResultCounters(torrents)},
		originOK:          origin.WithLabelValues("ok"),
		originClientError: origin.WithLabelValues("client_error"),
		originFailure:     origin.WithLabelValues("failure"),
		metainfoWaiting:   waiting,
		storeErrors:       storeErrors,
	}
}

// counterVec is a counter with one label.
func counterVec(name, help, label string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label})
}
