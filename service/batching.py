"""Token-budget dynamic batcher: a bounded queue, a scheduler thread and backend threads.

No web framework and no onnxruntime here: callers `submit` sequences and get one
`concurrent.futures.Future` per sequence; a backend is anything with `run(batch) -> outputs`.

    queue (FIFO, bounded by sequences and tokens)
      -> drop cancelled / expired entries, sort a window by length, take a batch under the
         token budget (longest x size, padding included) and max_batch_size
      -> backend thread(s): backend.run(payloads) -> one output per payload, set on the futures

An idle backend thread takes its batch from the queue itself; while every backend thread is
busy, a scheduler thread seals the next batch so it is ready the moment one frees. With
`workers` > 1 several backend threads each run a batch at the same time (the backend must allow
concurrent `run` calls): on a CPU, two single-threaded runs use two cores with no per-operator
synchronisation, where one run over two intra-op threads pays a hand-off at every operator.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Backend(Protocol):
    def run(self, batch: list[Any]) -> list[Any]:
        """Run one batch of payloads; return one output per payload, in order."""


class QueueFullError(Exception):
    """The queue cannot take the request now; retry after `retry_after_s` seconds."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestTooLargeError(Exception):
    """The request alone is larger than the whole queue: it can never be admitted."""


class DeadlineExceededError(Exception):
    """The entry's deadline passed before it reached the backend."""


class BatcherClosedError(Exception):
    """The batcher is shutting down and takes no new work."""


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_tokens: int = 16384  # padded tokens per batch: longest sequence x batch size
    max_batch_size: int = 64  # sequences per batch; 1 = no batching
    max_wait_ms: float | None = None  # while busy, seal the next batch after this long (None = when the backend frees)
    sort_window: int = 256  # oldest queued entries sorted by length when forming a batch
    max_queue_requests: int = 4096  # queued sequences before QueueFullError
    max_queue_tokens: int = 1_048_576  # queued (unpadded) tokens before QueueFullError
    overhead_tokens: int = 128  # fixed cost of one batch in tokens of work; larger = fuller, more padded batches
    workers: int = 1  # backend threads, each running one batch at a time


@dataclass
class Item:
    """What a caller submits: an opaque payload for the backend and its length in tokens."""

    payload: Any
    length: int
    deadline: float | None = None  # time.monotonic() after which the entry is dropped


@dataclass
class Entry:
    item: Item
    future: Future
    enqueued: float
    seq: int  # arrival order, so sorting is stable and the oldest entry is known
    dropped: bool = False

    @property
    def length(self) -> int:
        return self.item.length


@dataclass
class BatchStats:
    """What the observer hears about each batch (for metrics)."""

    size: int
    padded_tokens: int  # longest x size: what the backend paid for
    real_tokens: int  # sum of lengths
    queue_seconds: list[float] = field(default_factory=list)  # per entry, enqueue -> dispatch
    run_seconds: float = 0.0

    @property
    def padding_ratio(self) -> float:
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


class Observer(Protocol):
    def on_batch(self, stats: BatchStats) -> None: ...
    def on_drop(self, reason: str, count: int) -> None: ...


class _NullObserver:
    def on_batch(self, stats: BatchStats) -> None:
        pass

    def on_drop(self, reason: str, count: int) -> None:
        pass


def padded_cost(lengths: Sequence[int]) -> int:
    """Tokens the backend pays for a batch: every row is padded to the longest."""
    return max(lengths) * len(lengths) if lengths else 0


def select_batch(entries: list[Entry], max_tokens: int, max_size: int, overhead_tokens: int = 128) -> list[Entry]:
    """Pick a batch of similar lengths that always contains the oldest entry.

    `entries` is the sort window in arrival order. Sort it by length, start at the oldest entry and
    grow a contiguous run of the sorted list towards the neighbour whose length is closer, while
    (1) the padded cost stays within `max_tokens` and (2) the entry lowers the batch's cost per
    real token, the cost of a batch being `overhead_tokens` (its fixed price, in tokens of work)
    plus longest x size. So short and long inputs go to separate batches once a batch is big
    enough to pay its overhead, instead of padding every row to the longest. The oldest entry goes
    even if it alone is over budget, so nothing starves.
    """
    if not entries:
        return []
    ordered = sorted(entries, key=lambda e: (e.length, e.seq))
    oldest = min(entries, key=lambda e: e.seq)
    lo = hi = ordered.index(oldest)  # the batch is ordered[lo : hi + 1]
    longest, real = oldest.length, oldest.length

    def cost_per_token(longest: int, size: int, real: int) -> float:
        return (overhead_tokens + longest * size) / max(real, 1)

    while hi - lo + 1 < max_size:
        size = hi - lo + 1
        current = cost_per_token(longest, size, real)
        candidates = []
        for side, neighbour in (
            (-1, ordered[lo - 1] if lo > 0 else None),
            (1, ordered[hi + 1] if hi + 1 < len(ordered) else None),
        ):
            if neighbour is None:
                continue
            new_longest = max(longest, neighbour.length)
            if new_longest * (size + 1) > max_tokens:
                continue
            if cost_per_token(new_longest, size + 1, real + neighbour.length) > current:
                continue
            candidates.append((abs(neighbour.length - oldest.length), neighbour.seq, side, neighbour))
        if not candidates:
            break
        _, _, side, chosen = min(candidates)
        if side < 0:
            lo -= 1
        else:
            hi += 1
        longest, real = max(longest, chosen.length), real + chosen.length
    return ordered[lo : hi + 1]


class Batcher:
    """One queue, one scheduler thread and `config.workers` backend threads per model."""

    def __init__(
        self,
        backend: Backend,
        config: BatchingConfig | None = None,
        observer: Observer | None = None,
        name: str = "model",
        clock: Callable[[], float] = time.monotonic,
    ):
        self.backend = backend
        self.config = config or BatchingConfig()
        self.observer = observer or _NullObserver()
        self.name = name
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[Entry] = deque()
        self._queued_tokens = 0
        self._queued_entries = 0  # live entries (cancelled ones leave the count at once)
        self._next: list[Entry] | None = None  # sealed batch waiting for the backend thread
        self._running = 0  # batches the backend threads are running now
        self._closing = False
        self._stopped = False
        self._seq = itertools.count()
        self._tokens_per_s = 0.0  # moving average of backend throughput, for Retry-After
        if self.config.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.config.workers}")
        self._scheduler = threading.Thread(target=self._schedule_loop, name=f"batcher-{name}", daemon=True)
        self._runners = [
            threading.Thread(target=self._run_loop, name=f"backend-{name}-{i}", daemon=True)
            for i in range(self.config.workers)
        ]
        self._scheduler.start()
        for runner in self._runners:
            runner.start()

    # --- caller side -------------------------------------------------------------------------

    def submit(self, items: Sequence[Item]) -> list[Future]:
        """Queue all items or none: raises QueueFullError, RequestTooLargeError or BatcherClosedError."""
        items = list(items)
        tokens = sum(item.length for item in items)
        cfg = self.config
        if len(items) > cfg.max_queue_requests or tokens > cfg.max_queue_tokens:
            raise RequestTooLargeError(
                f"the request needs {len(items)} sequences / {tokens} tokens but model {self.name!r} queues at most "
                f"{cfg.max_queue_requests} sequences / {cfg.max_queue_tokens} tokens; split it into smaller requests"
            )
        with self._cond:
            if self._closing:
                raise BatcherClosedError(f"model {self.name!r} is shutting down")
            if (
                self._queued_entries + len(items) > cfg.max_queue_requests
                or self._queued_tokens + tokens > cfg.max_queue_tokens
            ):
                raise QueueFullError(
                    f"model {self.name!r} is overloaded ({self._queued_entries} sequences, "
                    f"{self._queued_tokens} tokens queued)",
                    self._retry_after_locked(tokens),
                )
            now = self._clock()
            futures = []
            for item in items:
                entry = Entry(item, Future(), now, next(self._seq))
                entry.future.add_done_callback(lambda _f, e=entry: self._on_done(e))
                self._queue.append(entry)
                futures.append(entry.future)
            self._queued_entries += len(items)
            self._queued_tokens += tokens
            self._cond.notify_all()
        return futures

    @property
    def queued(self) -> tuple[int, int]:
        """(sequences, tokens) waiting."""
        with self._cond:
            return self._queued_entries, self._queued_tokens

    def close(self, timeout: float | None = None) -> None:
        """Stop taking work, finish everything queued, then stop the threads; waits `timeout` s in all."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        end = None if timeout is None else time.monotonic() + timeout
        for thread in (self._scheduler, *self._runners):
            thread.join(None if end is None else max(0.0, end - time.monotonic()))

    # --- bookkeeping -------------------------------------------------------------------------

    def _on_done(self, entry: Entry) -> None:
        # A cancelled entry frees its queue capacity at once; it is removed from the deque later.
        if entry.future.cancelled():
            with self._cond:
                released = self._release_locked(entry)
                self._cond.notify_all()
            if released:
                self.observer.on_drop("cancelled", 1)

    def _release_locked(self, entry: Entry) -> bool:
        """Take the entry out of the queue's counts; False if it already was."""
        if entry.dropped:
            return False
        entry.dropped = True
        self._queued_entries -= 1
        self._queued_tokens -= entry.length
        return True

    def _retry_after_locked(self, extra_tokens: int) -> int:
        rate = self._tokens_per_s * self.config.workers  # per backend thread, all of them busy under load
        if rate <= 0:
            return 1
        return max(1, math.ceil((self._queued_tokens + extra_tokens) / rate))

    def _prune_locked(self, now: float) -> None:
        """Drop cancelled and expired entries still in the queue."""
        kept: deque[Entry] = deque()
        expired = cancelled = 0
        for entry in self._queue:
            if entry.dropped:  # cancelled: counted when it was released
                continue
            if entry.future.cancelled():
                cancelled += self._release_locked(entry)
            elif entry.item.deadline is not None and now >= entry.item.deadline:
                self._release_locked(entry)
                _fail(entry.future, DeadlineExceededError("deadline passed while queued"))
                expired += 1
            else:
                kept.append(entry)
        self._queue = kept
        if cancelled:
            self.observer.on_drop("cancelled", cancelled)
        if expired:
            self.observer.on_drop("deadline", expired)

    def _queue_fills_batch_locked(self) -> bool:
        cfg = self.config
        if self._queued_entries >= cfg.max_batch_size:
            return True
        lengths = [e.length for e in itertools.islice(self._queue, cfg.sort_window) if not e.dropped]
        return padded_cost(lengths) >= cfg.max_batch_tokens

    # --- scheduler thread: seals the next batch while every backend thread is busy -------------

    def _schedule_loop(self) -> None:
        cfg = self.config
        while True:
            with self._cond:
                while True:
                    if self._next is None and self._queued_entries > 0:
                        if self._running < cfg.workers or self._queue_fills_batch_locked():
                            break
                        if cfg.max_wait_ms is not None:
                            oldest = next((e for e in self._queue if not e.dropped), None)
                            remaining = oldest.enqueued + cfg.max_wait_ms / 1000 - self._clock() if oldest else 0
                            if remaining <= 0:
                                break
                            self._cond.wait(remaining)
                            continue
                    if self._queued_entries == 0 and self._queue:
                        self._queue.clear()  # only cancelled entries are left: let them go now
                    if self._closing and self._queued_entries == 0 and self._next is None:
                        self._stopped = True
                        self._cond.notify_all()
                        return
                    self._cond.wait()
                batch = self._take_batch_locked()
                if batch:
                    self._next = batch
                    self._cond.notify_all()

    def _take_batch_locked(self) -> list[Entry] | None:
        """Drop dead entries, then take the next batch out of the queue (None when nothing is left)."""
        cfg = self.config
        self._prune_locked(self._clock())
        window = list(itertools.islice(self._queue, cfg.sort_window))
        batch = select_batch(window, cfg.max_batch_tokens, cfg.max_batch_size, cfg.overhead_tokens)
        if not batch:
            return None
        chosen = {id(e) for e in batch}
        self._queue = deque(e for e in self._queue if id(e) not in chosen)
        for entry in batch:
            self._release_locked(entry)
        return batch

    # --- backend threads -----------------------------------------------------------------------

    def _run_loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._next is not None:  # sealed by the scheduler while every worker was busy
                        batch, self._next = self._next, None
                        break
                    if self._queued_entries > 0:
                        # An idle worker forms its own batch: no wait for the scheduler thread to be
                        # woken (a thread hand-off that costs a whole time slice on a busy machine).
                        batch = self._take_batch_locked()
                        if batch:
                            break
                        continue
                    if self._stopped:
                        return
                    self._cond.wait()
                self._running += 1
                self._cond.notify_all()
            try:
                self._run_batch(batch)
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()

    def _run_batch(self, batch: list[Entry]) -> None:
        now = self._clock()
        live: list[Entry] = []
        expired = cancelled = 0
        for entry in batch:  # last check: the client may have left while the batch waited
            if entry.item.deadline is not None and now >= entry.item.deadline:
                _fail(entry.future, DeadlineExceededError("deadline passed while queued"))
                expired += 1
            elif entry.future.set_running_or_notify_cancel():
                live.append(entry)
            else:
                cancelled += 1
        if cancelled:
            self.observer.on_drop("cancelled", cancelled)
        if expired:
            self.observer.on_drop("deadline", expired)
        if not live:
            return
        lengths = [e.length for e in live]
        start = self._clock()
        try:
            outputs = self.backend.run([e.item.payload for e in live])
            if len(outputs) != len(live):
                raise RuntimeError(f"backend returned {len(outputs)} outputs for {len(live)} inputs")
        except Exception as err:  # a backend fault fails this batch, not the server
            log.exception("backend of model %r failed on a batch of %d", self.name, len(live))
            for entry in live:
                _fail(entry.future, err)
            return
        run_seconds = self._clock() - start
        for entry, output in zip(live, outputs):
            try:
                entry.future.set_result(output)
            except InvalidStateError:
                pass
        padded = padded_cost(lengths)
        if run_seconds > 0:
            rate = padded / run_seconds
            with self._cond:
                self._tokens_per_s = rate if self._tokens_per_s == 0 else 0.8 * self._tokens_per_s + 0.2 * rate
        self.observer.on_batch(
            BatchStats(
                size=len(live),
                padded_tokens=padded,
                real_tokens=sum(lengths),
                queue_seconds=[start - e.enqueued for e in live],
                run_seconds=run_seconds,
            )
        )


def _fail(future: Future, err: BaseException) -> None:
    try:
        future.set_exception(err)
    except InvalidStateError:  # cancelled meanwhile
        pass
