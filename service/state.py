"""What the app holds at run time: settings, loaded models, metrics, readiness."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.bundle import check_bundle
from core.providers import available_providers, choose_device
from service.backends import OnnxBackend, open_model, warmup_batches
from service.batching import Batcher, BatchingConfig
from service.config import ServiceSettings
from service.engine import Deadline, ModelEngine
from service.loop_lag import LoopLag
from service.metrics import Metrics
from service.store import BundleRefusedError, ModelStore, Registry, Version, first_line

__all__ = ["AppState", "BundleRefusedError"]

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


@dataclass
class AppState:
    settings: ServiceSettings
    metrics: Metrics = field(default_factory=Metrics)
    registry: Registry = field(init=False)
    ready: bool = False
    draining: bool = False
    lifespans: int = 0  # servers currently running over this state
    tokenize_pool: ThreadPoolExecutor | None = None
    loader: Any = None  # replaces core.bundle.load_bundle (tests)
    poller: asyncio.Task | None = None
    loop_lag: LoopLag = field(default_factory=LoopLag)  # admission counts it (settings.loop_lag_factor)
    lag_watcher: asyncio.Task | None = None

    def __post_init__(self) -> None:
        s = self.settings
        self.metrics.loop_lag.set_function(lambda: self.loop_lag.seconds)
        store = None
        if s.model_store is not None:
            device, _ = choose_device(s.provider, available_providers())
            store = ModelStore(Path(s.model_store), device, s.precision)
        self.registry = Registry(
            store, self._open_version, self._close_engine, s.max_loaded_models, s.max_loaded_model_bytes
        )

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

    async def start(self, loader=None) -> None:
        """Load (in a thread), then watch the event loop's lag and poll the model store when the settings ask."""
        await asyncio.to_thread(self.load, loader)
        self.lag_watcher = asyncio.create_task(self.loop_lag.watch())
        if self.registry.store is not None and self.settings.model_store_poll_s > 0:
            self.poller = asyncio.create_task(self._poll(self.settings.model_store_poll_s))

    async def stop(self, timeout: float | None = None) -> None:
        for task in (self.poller, self.lag_watcher):
            if task is not None:
                task.cancel()
        await asyncio.to_thread(self.close, timeout)

    async def _poll(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.registry.refresh()
            except Exception:  # the next poll tries again; serving goes on
                log.exception("model store poll failed")

    def load(self, loader=None) -> None:
        """Open every bundle, start its batcher and run the warm-up batches, and scan the store (blocking)."""
        s = self.settings
        if not s.bundles and s.model_store is None:
            raise BundleRefusedError(
                "nothing to serve: pass --bundles DIR or --model-store DIR (BERTKIT_BUNDLES, BERTKIT_MODEL_STORE)"
            )
        self.loader = loader
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
        self.registry.load_store()
        self.ready = True
        names = ", ".join(
            f"{e.name} ({e.task}, {e.bundle.precision}{'' if e.batch_invariant else ', NOT batch-invariant'}, "
            f"{e.provider})"
            for e in self.registry.engines.values()
        )
        if names:
            log.info("ready: serving %s", names)
        if self.registry.store is not None:
            store = [m for m in self.registry.models() if m.manifest is not None]
            models = ", ".join(f"{m.name} ({m.task}, version {m.version or 'unversioned'})" for m in store)
            log.info("ready: model store %s holds %s; each loads on first use", s.model_store, models or "nothing yet")

    def _open_version(self, name: str, version: Version) -> ModelEngine:
        """The store's opener: load, verify and warm up one version of model `name` (blocking)."""
        engine = self._open(version.path, self.loader, name=name, version=version.name)
        try:
            if self.settings.warmup:
                self._warm_up(engine)
        except BaseException:
            engine.batcher.close()
            raise
        return engine

    def _close_engine(self, engine: ModelEngine, timeout: float | None = None) -> None:
        engine.batcher.close(timeout)

    def _loop_wait(self) -> float:
        """Seconds an admitted request is expected to wait for the event loop (the batcher's outside wait)."""
        return self.settings.loop_lag_factor * self.loop_lag.seconds

    def _queued(self, name: str) -> tuple[int, int]:
        """(sequences, tokens) queued for the model loaded as `name` now; looked up by name so that an unloaded
        model's batcher (and its session) is not kept alive by the gauges."""
        engine = self.registry.loaded(name)
        return engine.batcher.queued if engine is not None else (0, 0)

    def _open(self, path: Path, loader, name: str | None = None, version: str | None = None) -> ModelEngine:
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
        name = name or bundle.name
        if s.verify_bundles and loader is None:  # on the bundle just loaded: hashed once, one session
            try:
                check_bundle(bundle)
            except (OSError, ValueError) as err:  # BundleError is a ValueError naming the file or field at fault
                raise BundleRefusedError(f"bundle {opened.path} refused by verify: {first_line(err)}") from None
        if bundle.max_seq_len > s.max_batch_tokens:
            log.warning(
                "bundle %s: max_seq_len %d exceeds max_batch_tokens %d; its longest inputs run one per batch",
                bundle.name, bundle.max_seq_len, s.max_batch_tokens,
            )  # fmt: skip
        backend = OnnxBackend(bundle, opened.device)
        config = self.batching_config(opened.device)
        batcher = Batcher(backend, config, self.metrics.observer(name), name=name, outside_wait=self._loop_wait)
        self.metrics.queue_length.labels(name).set_function(lambda: self._queued(name)[0])
        self.metrics.queue_tokens.labels(name).set_function(lambda: self._queued(name)[1])
        return ModelEngine(bundle, batcher, self.tokenize_pool, self.metrics, opened.device, name, version)

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
        self.registry.close(timeout)
        if self.tokenize_pool is not None:
            self.tokenize_pool.shutdown(wait=False, cancel_futures=True)
