"""Prometheus metrics for `GET /metrics`, in a registry owned by one server instance."""

from __future__ import annotations

import collections
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from .batcher import BatchStats

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]

RTF_WINDOW_S = 30.0


class Metrics:
    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.info = Gauge("tingxie_model_info", "Model served", ["model"], registry=r)
        self.info.labels(model=model).set(1)
        self.sessions = Gauge("tingxie_sessions_active", "Open streaming sessions", registry=r)
        self.sessions_total = Counter("tingxie_sessions", "Sessions opened", registry=r)
        self.rejected = Counter("tingxie_handshakes_rejected", "Connections refused at the handshake", ["status"], registry=r)
        self.audio = Counter("tingxie_audio_seconds", "Audio received (seconds per channel)", registry=r)
        self.messages = Counter("tingxie_messages_sent", "Messages sent to clients", ["type"], registry=r)
        self.errors = Counter("tingxie_errors", "Sessions ended by an error", ["code"], registry=r)
        self.batch_size = Histogram(
            "tingxie_batch_size", "Streams per batched model step", buckets=(1, 2, 4, 8, 16, 24, 32, 48, 64, 128), registry=r
        )
        buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
        self.step_seconds = Histogram("tingxie_step_seconds", "Duration of one batched model step", buckets=buckets, registry=r)
        self.batch_seconds = Histogram(
            "tingxie_batch_seconds", "Worker time per batch (step, final passes)", buckets=buckets, registry=r
        )
        self.queue_wait = Histogram(
            "tingxie_queue_wait_seconds", "Longest wait of a request for its batch", buckets=buckets, registry=r
        )
        self.finals = Counter(
            "tingxie_finals", "Finals sent, by the decoding that produced them (full-context pass or streaming)", ["pass"],
            registry=r,
        )
        self.passes_skipped = Counter(
            "tingxie_final_passes_skipped", "Final passes replaced by the streaming result (engine behind)", registry=r
        )
        self.rescoring_shed = Counter(
            "tingxie_rescoring_shed", "Full passes run without their attention rescoring (engine busy)", registry=r
        )
        self.rtf = Gauge(
            "tingxie_real_time_factor", f"Worker busy time / audio decoded, over the last {RTF_WINDOW_S:.0f} s", registry=r
        )
        self._window: collections.deque[tuple[float, float, float]] = collections.deque()

    def on_message(self, msg: Any) -> None:
        """A server message sent to a client (or a call's subscribers)."""
        self.messages.labels(type=msg.type).inc()
        if msg.type == "final":
            self.finals.labels(**{"pass": msg.pass_}).inc()

    def on_pass_skipped(self, n: int) -> None:
        self.passes_skipped.inc(n)

    def on_batch(self, stats: BatchStats) -> None:
        if stats.chunks:
            self.batch_size.observe(stats.chunks)
            self.step_seconds.observe(stats.step_seconds)
        self.batch_seconds.observe(stats.seconds)
        if stats.rescoring_shed:
            self.rescoring_shed.inc(stats.rescoring_shed)
        self.queue_wait.observe(stats.max_wait_seconds)
        now = time.monotonic()
        self._window.append((now, stats.seconds, stats.audio_seconds))
        while self._window and self._window[0][0] < now - RTF_WINDOW_S:
            self._window.popleft()
        audio = sum(a for _, _, a in self._window)
        if audio > 0:
            self.rtf.set(sum(b for _, b, _ in self._window) / audio)

    def render(self) -> bytes:
        return generate_latest(self.registry)
