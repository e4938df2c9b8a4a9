"""Prometheus metrics of one API instance (its own registry: several apps in one process,
as in the tests, do not share counters)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "chouette_api_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "chouette_api_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "chouette_api_predictions",
            "Images classified, by model and predicted class",
            ["model_id", "predicted"],
            registry=r,
        )
        self.model_served = Gauge(
            "chouette_api_model_served",
            "1 for the champion model served by default (labelled with its id), else absent",
            ["model_id", "architecture"],
            registry=r,
        )
        self.batch_images = Histogram(
            "chouette_api_batch_images",
            "Images per model call (concurrent requests are batched together)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )

    def serving(self, model_id: int, architecture: str) -> None:
        self.model_served.clear()
        self.model_served.labels(str(model_id), architecture).set(1)

    def text(self) -> bytes:
        return generate_latest(self.registry)
