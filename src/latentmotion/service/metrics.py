"""Prometheus metrics and one-line structured logs of the cloud service.

Every server owns its own :class:`prometheus_client.CollectorRegistry`, so two
servers in one process (tests, benchmarks) never share counters.

Example:
    >>> m = Metrics()
    >>> m.errors.labels(kind="sequence_gap").inc()
    >>> m.value("latentmotion_errors_total", kind="sequence_gap")
    1.0
"""

from __future__ import annotations

import json
import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics", "log_event"]

_log = logging.getLogger("latentmotion.service")


def log_event(event: str, level: int = logging.INFO, **fields) -> None:
    """One JSON object per line: time, event and its fields (machine-readable, grep-able)."""
    if _log.isEnabledFor(level):
        _log.log(level, json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, default=str))


class Metrics:
    """The service's counters, gauges and histograms in a private registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.frames = Counter("latentmotion_frames", "Frames classified", registry=r)
        self.bytes = Counter("latentmotion_received_bytes", "Codec bytes received (headers and frames)", registry=r)
        self.latency = Histogram(
            "latentmotion_frame_latency_seconds",
            "Frame received -> classified (window wait, decode, batch and model)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.batch = Histogram("latentmotion_batch_size", "Frames per model batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.streams = Gauge("latentmotion_active_streams", "Open edge streams", registry=r)
        self.errors = Counter("latentmotion_errors", "Streams or frames ended by an error, by kind", ["kind"], registry=r)

    def value(self, name: str, **labels: str) -> float | None:
        """Current value of one sample (for tests and summaries)."""
        return self.registry.get_sample_value(name, labels)
