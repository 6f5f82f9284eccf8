"""Every metric dexec exports, through ray.util.metrics (the dashboard and Prometheus).

The plain cores report through protocols (actors.telemetry.Metrics, BatchStats'
sink, gateways.base.VenueMetrics); these classes are what the shells hand them.
"""

from __future__ import annotations

from ray.util import metrics as m

from actors.telemetry import BatchStats

LATENCY_BOUNDARIES = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                      30.0, 60.0]


class RayMetrics:
    """The orders' metrics: submissions, outcomes, latency per stage, retries, the queue."""

    def __init__(self) -> None:
        self._submitted = m.Counter("dexec_orders_submitted", "Orders accepted",
                                    tag_keys=("type",))
        self._finished = m.Counter("dexec_orders_finished", "Orders that reached a terminal status",
                                   tag_keys=("status", "venue"))
        self._latency = m.Histogram("dexec_order_latency_seconds", "Submit to terminal",
                                    boundaries=LATENCY_BOUNDARIES, tag_keys=("status",))
        self._stage = m.Histogram("dexec_order_stage_seconds",
                                  "Time spent in each status (pending is the queue wait)",
                                  boundaries=LATENCY_BOUNDARIES, tag_keys=("stage",))
        self._retries = m.Counter("dexec_order_retries", "New attempts after a failure",
                                  tag_keys=("error_class",))
        self._waiting = m.Gauge("dexec_orders_waiting", "Orders queued for a worker")
        self._executing = m.Gauge("dexec_orders_executing", "Orders being executed")
        self._resting = m.Gauge("dexec_orders_resting",
                                "Limit and stop orders waiting for their price")

    def order_submitted(self, order_type: str) -> None:
        self._submitted.inc(tags={"type": order_type})

    def order_finished(self, status: str, venue: str, seconds: float) -> None:
        self._finished.inc(tags={"status": status, "venue": venue})
        self._latency.observe(seconds, tags={"status": status})

    def stage(self, stage: str, seconds: float) -> None:
        self._stage.observe(seconds, tags={"stage": stage})

    def retry(self, error_class: str) -> None:
        self._retries.inc(tags={"error_class": error_class})

    def queue(self, waiting: int, executing: int, resting: int) -> None:
        self._waiting.set(waiting)
        self._executing.set(executing)
        self._resting.set(resting)


class RayBatchMetrics:
    """Export a process's BatchStats sums as counters, per call site (label `site`)."""

    def __init__(self) -> None:
        keys = ("site",)
        self._counters = (
            m.Counter("dexec_batch_calls", "Batched calls made", tag_keys=keys),
            m.Counter("dexec_batch_items", "Items the batched calls carried", tag_keys=keys),
            m.Counter("dexec_batch_wait_seconds",
                      "Summed time the oldest item of each batch waited for it to leave",
                      tag_keys=keys),
            m.Counter("dexec_batch_call_seconds", "Summed round trip of the batched calls",
                      tag_keys=keys),
        )

    def record(self, site: str, calls: int, items: int, wait_s: float, call_s: float) -> None:
        tags = {"site": site}
        for counter, value in zip(self._counters, (calls, items, wait_s, call_s), strict=True):
            if value > 0:  # Ray's counters refuse an increment of 0
                counter.inc(value, tags=tags)


def batch_stats() -> BatchStats:
    """Return a BatchStats for this process that exports to Ray's metrics every 5 s."""
    return BatchStats(RayBatchMetrics().record)


class RayVenueMetrics:
    """Latency and errors of every venue call, measured where the gateway runs."""

    def __init__(self) -> None:
        self._seconds = m.Histogram("dexec_venue_call_seconds", "Venue call latency",
                                    boundaries=LATENCY_BOUNDARIES, tag_keys=("venue", "call"))
        self._errors = m.Counter("dexec_venue_errors", "Venue calls that failed",
                                 tag_keys=("venue", "call", "code"))

    def call(self, venue: str, call: str, seconds: float, error_code: str | None) -> None:
        self._seconds.observe(seconds, tags={"venue": venue, "call": call})
        if error_code is not None:
            self._errors.inc(tags={"venue": venue, "call": call, "code": error_code})


class NotifierMetrics:
    """Events the Notifier received, and deliveries it dropped (a replica too far behind:
    its clients fill the gap from the database)."""

    def __init__(self) -> None:
        self._published = m.Counter("dexec_events_published", "Status events published")
        self._dropped = m.Counter("dexec_events_dropped",
                                  "Event deliveries dropped for a replica's full queue")

    def published(self, events: int, *, dropped: int) -> None:
        if events:  # Ray's counters refuse an increment of 0
            self._published.inc(events)
        if dropped:
            self._dropped.inc(dropped)


class IngressMetrics:
    """WebSocket connections and refused submissions, as seen by one ingress replica."""

    def __init__(self) -> None:
        self._connections = m.Gauge("dexec_websocket_connections",
                                    "Open WebSocket connections")
        self._rejected = m.Counter("dexec_submissions_rejected", "Submissions refused with 429",
                                   tag_keys=("reason",))

    def connections(self, count: int) -> None:
        self._connections.set(count)

    def rejected(self, why: str) -> None:
        self._rejected.inc(tags={"reason": why})
