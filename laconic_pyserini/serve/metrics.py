"""The service's Prometheus metrics, in a registry of its own (two services in one process never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """Request latency, queue depth (requests admitted and not finished), encode batch sizes and rejections."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram("laconic_request_seconds", "request latency", ["route", "status"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("laconic_queue_depth", "requests admitted and not yet answered",
                                 registry=self.registry)
        self.batch_size = Histogram("laconic_encode_batch_size", "queries encoded together", ["group"],
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.rejections = Counter("laconic_rejections_total", "requests refused", ["reason"],
                                  registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
