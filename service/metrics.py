"""Prometheus metrics of one app instance (own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.batching import BatchStats

_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
_RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
_TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "bertkit_requests", "HTTP requests by endpoint and status code", ["endpoint", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "bertkit_request_seconds", "HTTP request latency", ["endpoint"], buckets=_TIME_BUCKETS, registry=r
        )
        self.queue_length = Gauge("bertkit_queue_sequences", "Sequences waiting per model", ["model"], registry=r)
        self.queue_tokens = Gauge("bertkit_queue_tokens", "Tokens waiting per model", ["model"], registry=r)
        self.batch_size = Histogram(
            "bertkit_batch_size", "Sequences per batch", ["model"], buckets=_SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "bertkit_batch_tokens", "Padded tokens per batch (longest x size)", ["model"], buckets=_TOKEN_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.padding_ratio = Histogram(
            "bertkit_batch_padding_ratio", "Share of a batch's tokens that are padding", ["model"],
            buckets=_RATIO_BUCKETS, registry=r,
        )  # fmt: skip
        self.real_tokens = Counter("bertkit_real_tokens", "Non-padding tokens run", ["model"], registry=r)
        self.padded_tokens = Counter("bertkit_padded_tokens", "Tokens run, padding included", ["model"], registry=r)
        self.queue_seconds = Histogram(
            "bertkit_queue_seconds",
            "Time from enqueue to inference start",
            ["model"],
            buckets=_TIME_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "bertkit_inference_seconds", "Backend time per batch", ["model"], buckets=_TIME_BUCKETS, registry=r
        )
        self.tokenize_seconds = Histogram(
            "bertkit_tokenize_seconds", "Tokenization time per request", ["model"], buckets=_TIME_BUCKETS, registry=r
        )
        self.dropped = Counter(
            "bertkit_dropped_sequences", "Queued sequences dropped before inference", ["model", "reason"], registry=r
        )
        self.loop_lag = Gauge(
            "bertkit_event_loop_lag_seconds", "How late the event loop runs a due timer (smoothed)", registry=r
        )
        self.rejected = Counter("bertkit_rejected_requests", "Requests refused with 429", ["model"], registry=r)
        self.held_refusals = Counter(
            "bertkit_held_refusals",
            "429s held until the Retry-After the connection was last given (it came back early)",
            ["model"],
            registry=r,
        )

    def observer(self, model: str) -> BatchObserver:
        return BatchObserver(self, model)


class BatchObserver:
    """Feeds one model's batch statistics into the metrics (called on the backend thread)."""

    def __init__(self, metrics: Metrics, model: str):
        self.m = metrics
        self.model = model

    def on_batch(self, stats: BatchStats) -> None:
        m, model = self.m, self.model
        m.batch_size.labels(model).observe(stats.size)
        m.batch_tokens.labels(model).observe(stats.padded_tokens)
        m.padding_ratio.labels(model).observe(stats.padding_ratio)
        m.real_tokens.labels(model).inc(stats.real_tokens)
        m.padded_tokens.labels(model).inc(stats.padded_tokens)
        m.inference_seconds.labels(model).observe(stats.run_seconds)
        for seconds in stats.queue_seconds:
            m.queue_seconds.labels(model).observe(seconds)

    def on_drop(self, reason: str, count: int) -> None:
        self.m.dropped.labels(self.model, reason).inc(count)
