package agent

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ssanet/ssanet/storage"
)

// A full disk pauses the record flow (storage refuses records below its reserve with
// storage.ErrDiskFull; see storage/space.go): the provider's sources stop reading (followed
// files stay where they are) and syslog messages are dropped and counted; the requester does
// not acknowledge a batch it could not store, so the provider sends it again later. The
// diskWatch says so once on entering the state and once on leaving it (log), all along in
// metrics, and in the fulfilment report and the assessment.

// spaceCheck is how often the diskWatch measures the free space.
const spaceCheck = time.Second

// diskWatch follows the free space of the store's volume.
type diskWatch struct {
	space func() (storage.Space, error)
	log   *slog.Logger
	full  atomic.Bool

	free, reserve, paused prometheus.Gauge
	dropped               prometheus.Counter
}

func newDiskWatch(space func() (storage.Space, error), log *slog.Logger, reg prometheus.Registerer) *diskWatch {
	w := &diskWatch{space: space, log: log,
		free: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "ssanet", Name: "disk_free_bytes",
			Help: "Free space on the store's volume."}),
		reserve: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "ssanet", Name: "disk_reserve_bytes",
			Help: "Free space below which records are refused (storage-reserve-mib plus the LSM tree)."}),
		paused: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "ssanet", Name: "records_paused",
			Help: "1 while records are refused for lack of disk space, else 0."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ssanet", Name: "records_dropped_disk_full_total",
			Help: "Syslog messages dropped because the disk was below its reserve."}),
	}
	reg.MustRegister(w.free, w.reserve, w.paused, w.dropped)
	w.check()
	return w
}

// run checks the free space every spaceCheck until ctx ends.
func (w *diskWatch) run(ctx context.Context) {
	t := time.NewTicker(spaceCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.check()
		}
	}
}

// check measures the free space now and logs a change of state.
func (w *diskWatch) check() {
	sp, err := w.space()
	if err != nil {
		w.log.Debug("free space", "err", err)
		return
	}
	w.free.Set(float64(sp.Free))
	w.reserve.Set(float64(sp.Reserve))
	full := sp.Paused
	if full {
		w.paused.Set(1)
	} else {
		w.paused.Set(0)
	}
	if w.full.Swap(full) == full {
		return
	}
	if full {
		w.log.Warn("disk below its reserve: records paused (ingest stops, received batches are not acknowledged) until space is freed on the store's volume",
			"free", sp.Free, "reserve", sp.Reserve)
	} else {
		w.log.Info("disk space back above the reserve: records flow again", "free", sp.Free, "reserve", sp.Reserve)
	}
}

// isPaused reports whether records were refused at the last check.
func (w *diskWatch) isPaused() bool { return w.full.Load() }

// refused is told of a write refused with storage.ErrDiskFull, so that the state changes at
// once rather than at the next check.
func (w *diskWatch) refused() { w.check() }
