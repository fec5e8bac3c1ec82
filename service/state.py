"""What the app holds at run time: settings, loaded models, metrics, readiness."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from core.bundle import check_bundle
from service.backends import OnnxBackend, open_model, warmup_batches
from service.batching import Batcher, BatchingConfig
from service.config import ServiceSettings
from service.engine import Deadline, ModelEngine, Registry
from service.metrics import Metrics

log = logging.getLogger("service")
# Defaults of the settings left unset, per device (measured on MiniLM, SST-2 lengths, 2 CPU cores: two
# concurrent single-threaded batches served ~2x the requests/s of one; overhead 16 cut padding from ~24%
# to ~6% of the tokens run, and a CPU pays for every padded token).
CPU_BACKEND_WORKERS = 2
CPU_OVERHEAD_TOKENS = 16
CUDA_OVERHEAD_TOKENS = 128


def default_intra_op_threads(workers: int) -> int:
    """All cores but one (left to the event loop and tokenization), split between the backend workers,
    at least one each: on 2 cores two single-threaded runs share the cores with the event loop (a
    single-threaded run has no spinning pool threads, so the loop still gets its turn)."""
    return max(1, (usable_cores() - 1) // workers)


def usable_cores() -> int:
    """Cores this process may run on (a container's cpuset, `taskset`), not all of the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 2


class BundleRefusedError(RuntimeError):
    """A bundle that cannot be served; the message is the one log line that says why."""


@dataclass
class AppState:
    settings: ServiceSettings
    metrics: Metrics = field(default_factory=Metrics)
    registry: Registry = field(default_factory=Registry)
    ready: bool = False
    draining: bool = False
    lifespans: int = 0  # servers currently running over this state
    tokenize_pool: ThreadPoolExecutor | None = None

    def batching_config(self, device: str = "cpu") -> BatchingConfig:
        """The batcher's knobs; the ones left unset in the settings get the device's default."""
        s = self.settings
        cuda = device == "cuda"
        return BatchingConfig(
            workers=self.backend_workers(device),
            max_batch_tokens=s.max_batch_tokens,
            max_batch_size=s.max_batch_size,
            max_wait_ms=s.max_wait_ms,
            sort_window=s.sort_window,
            max_queue_requests=s.max_queue_requests,
            max_queue_tokens=s.max_queue_tokens,
            max_queue_ms=s.max_queue_ms,
            overhead_tokens=s.batch_overhead_tokens
            if s.batch_overhead_tokens is not None
            else (CUDA_OVERHEAD_TOKENS if cuda else CPU_OVERHEAD_TOKENS),
        )

    def backend_workers(self, device: str) -> int:
        """Concurrent batches per model: the setting, else 2 on CPU and 1 on CUDA."""
        return self.settings.backend_workers or (1 if device == "cuda" else CPU_BACKEND_WORKERS)

    def deadline(self, body_timeout_ms: int | None, header_timeout_ms: int | None) -> Deadline:
        s = self.settings
        timeout = body_timeout_ms if body_timeout_ms is not None else header_timeout_ms
        if timeout is None:
            timeout = s.default_timeout_ms
        if timeout is None:
            return Deadline(None)
        return Deadline(time.monotonic() + min(timeout, s.max_timeout_ms) / 1000)

    # --- start and stop ------------------------------------------------------------------------

    def load(self, loader=None) -> None:
        """Open every bundle, start its batcher and run the warm-up batches (blocking)."""
        s = self.settings
        if not s.bundles:
            raise BundleRefusedError("no bundles to serve: pass --bundles DIR or set BERTKIT_BUNDLES")
        self.tokenize_pool = ThreadPoolExecutor(s.tokenizer_threads, thread_name_prefix="tokenize")
        for path in s.bundles:
            engine = self._open(Path(path), loader)
            try:
                self.registry.add(engine)
            except ValueError as err:
                engine.batcher.close()
                raise BundleRefusedError(f"bundle {path} refused: {err}") from None
        if s.warmup:
            for engine in self.registry.engines.values():
                self._warm_up(engine)
        self.ready = True
        names = ", ".join(
            f"{e.name} ({e.task}, {e.bundle.precision}{'' if e.batch_invariant else ', NOT batch-invariant'}, "
            f"{e.provider})"
            for e in self.registry.engines.values()
        )
        log.info("ready: serving %s", names)

    def _open(self, path: Path, loader) -> ModelEngine:
        s = self.settings
        # One core stays free for the event loop and tokenization: onnxruntime's spinning workers on
        # every core starve them (on 2 cores, 1 intra-op thread served 1.75x the requests of 2). The
        # cores left are split between the backend workers, each running its own batch.
        threads = s.intra_op_threads or default_intra_op_threads(self.backend_workers("cpu"))
        try:
            opened = open_model(path, s.provider, s.precision, threads, loader=loader)
        except (OSError, ValueError) as err:
            raise BundleRefusedError(f"bundle {path} refused: {err}") from None
        bundle = opened.bundle
        if s.verify_bundles and loader is None:  # on the bundle just loaded: hashed once, one session
            try:
                check_bundle(bundle)
            except (OSError, ValueError) as err:  # BundleError is a ValueError naming the file or field at fault
                raise BundleRefusedError(f"bundle {opened.path} refused by verify: {_first_line(err)}") from None
        if bundle.max_seq_len > s.max_batch_tokens:
            log.warning(
                "bundle %s: max_seq_len %d exceeds max_batch_tokens %d; its longest inputs run one per batch",
                bundle.name, bundle.max_seq_len, s.max_batch_tokens,
            )  # fmt: skip
        backend = OnnxBackend(bundle, opened.device)
        config = self.batching_config(opened.device)
        batcher = Batcher(backend, config, self.metrics.observer(bundle.name), name=bundle.name)
        self.metrics.queue_length.labels(bundle.name).set_function(lambda b=batcher: b.queued[0])
        self.metrics.queue_tokens.labels(bundle.name).set_function(lambda b=batcher: b.queued[1])
        return ModelEngine(bundle, batcher, self.tokenize_pool, self.metrics, opened.device)

    def _warm_up(self, engine: ModelEngine) -> None:
        s, tok = self.settings, engine.tokenizer
        start = time.perf_counter()
        batches = warmup_batches(
            engine.max_seq_len, s.max_batch_size, s.max_batch_tokens, tok.cls_id, tok.sep_id, tok.unk_id, engine.device
        )
        engine.batcher.warm_up(batches, length=len)  # also times a batch: admission's first throughput estimate
        log.info("warmed up %s in %.2fs", engine.name, time.perf_counter() - start)

    def close(self, timeout: float | None = None) -> None:
        """Finish queued work, stop the batcher threads and the tokenizer pool."""
        self.ready = False
        for engine in self.registry.engines.values():
            engine.batcher.close(timeout)
        if self.tokenize_pool is not None:
            self.tokenize_pool.shutdown(wait=False, cancel_futures=True)


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__
