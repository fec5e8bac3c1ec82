"""Token-budget dynamic batcher: a bounded queue, a scheduler thread and backend threads.

No web framework and no onnxruntime here: callers `submit` sequences and get one
`concurrent.futures.Future` per sequence; a backend is anything with `run(batch) -> outputs`.

    admission: refuse (QueueFullError + Retry-After) when the work queued ahead would take longer
      than max_queue_ms at the measured throughput; hard caps on queued sequences and tokens
    queue (FIFO)
      -> drop cancelled / expired entries, sort a window by length, take a batch under the
         token budget (longest x size, padding included) and max_batch_size
      -> backend thread(s): backend.run(payloads) -> one output per payload, set on the futures

An idle backend thread takes its batch from the queue itself; while every backend thread is
busy, a scheduler thread seals the next batch so it is ready the moment one frees. With
`workers` > 1 several backend threads each run a batch at the same time (the backend must allow
concurrent `run` calls): on a CPU, two single-threaded runs use two cores with no per-operator
synchronisation, where one run over two intra-op threads pays a hand-off at every operator.

Admission bounds the wait, not the queue length. Work is counted as `select_batch` counts it: a
batch costs `overhead_tokens + longest x size`. For a new request:

    work ahead = padding x T + overhead_tokens x ceil(max(N / size, padding x T / max_batch_tokens))
                 + the work of the batch sealed for the next free backend thread
                 + passing
    wait       = work ahead / (workers x rate)

where N and T are the sequences and (unpadded) tokens queued or reserved by admitted requests that
are still being tokenized, `padding` is the exponentially weighted padded/real tokens of recent
batches, `size` their weighted sequences per batch when more waited (else max_batch_size), `passing` the
most work of newer entries that went before an entry in recent batches (`PassingWork`: a batch of
similar lengths out of the sort window takes newer entries past older ones of other lengths, so an
admitted request's real wait is the work ahead of it plus that; not counting it, 1,024 simulated
SST-2 clients waited up to 1.4x max_queue_ms at the p99) and `rate` the batches' weighted work per
second of one backend thread (`prior_tokens_per_s`
before the first batch), or, when lower, the rate at which the queue was seen to drain in the last
seconds (`DrainRate`: the backend threads share cores with the rest of the process). A request is
refused when wait > max_queue_ms, with Retry-After = the seconds until enough of that work has run.
Only the work *ahead* counts, not the request's own: a request of many inputs passes the same test
as a one-input one, so a stream of small requests cannot starve it, and once admitted it keeps its
place (the oldest entry is always in the next batch). The request's own sequences then run after
what was ahead, so a one-input request waits at most max_queue_ms plus the rest of the batch running
when it arrived (if the estimate holds; tests/service/test_batching_sim.py checks it at the p99).
`admit` takes this decision before the caller spends any tokenization, holding a reservation of the
estimated size until `submit`.

An `outside_wait` source (seconds) adds the wait a request also has outside this queue, e.g. for
the event loop (service.loop_lag): refused when wait + outside wait > max_queue_ms, counted only
when there is work ahead, so a request to an empty queue is always admitted.
"""

from __future__ import annotations

import bisect
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
    max_queue_ms: float | None = 1000.0  # refuse when the work queued ahead would take longer (None = caps only)
    prior_tokens_per_s: float = 5000.0  # work per second of one backend thread assumed before the first batch


@dataclass
class Item:
    """What a caller submits: an opaque payload for the backend and its length in tokens."""

    payload: Any
    length: int
    deadline: float | None = None  # time.monotonic() after which the entry is dropped


@dataclass
class Reservation:
    """Room held for an admitted request while it is tokenized (estimated sizes), until `submit`."""

    entries: int
    tokens: int
    released: bool = False


@dataclass
class Entry:
    item: Item
    future: Future
    enqueued: float
    seq: int  # arrival order, so sorting is stable and the oldest entry is known
    dropped: bool = False
    passed_by: float = 0.0  # work of the newer entries that went to the backend before this one

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


class Throughput:
    """Exponentially weighted work rate and padding of recent batches, as `select_batch` counts work.

    The rate is the weighted work (`overhead_tokens + longest x size`) over the weighted seconds of
    recent batches, so a long batch weighs more than a short one; the padding factor is the weighted
    padded over real tokens, and `size` the weighted sequences per batch formed while more waited (the
    queue's work counts one overhead per batch of that size: batches of similar lengths are often far
    below max_batch_size). Before the first batch: `prior_tokens_per_s` (or a warm-up run's rate), no
    padding, no size.
    """

    def __init__(self, prior_tokens_per_s: float, weight: float = 0.2):
        self.weight = weight
        self.work, self.seconds = prior_tokens_per_s, 1.0
        self.padded = self.real = 1.0
        self.size: float | None = None
        self.measured = False

    def observe(self, work: float, seconds: float, padded: int, real: int, prior: bool = False) -> None:
        """Add one batch; a `prior` one (warm-up) only replaces the prior, and the first real batch replaces it."""
        if seconds <= 0 or real <= 0:
            return
        w = self.weight if self.measured else 1.0
        self.work += w * (work - self.work)
        self.seconds += w * (seconds - self.seconds)
        self.padded += w * (padded - self.padded)
        self.real += w * (real - self.real)
        self.measured = not prior

    def observe_size(self, size: int) -> None:
        """A batch formed while more entries waited than it took: as many as similar lengths allow."""
        self.size = size if self.size is None else self.size + self.weight * (size - self.size)

    @property
    def tokens_per_s(self) -> float:
        return self.work / self.seconds

    @property
    def padding(self) -> float:
        return max(1.0, self.padded / self.real)


class DrainRate:
    """Work the backends actually finish per wall-clock second while the queue is never empty.

    `Throughput` times each batch on its own thread; `workers x` that rate assumes every backend
    thread has a core to itself. When the event loop, the tokenizers or other processes take CPU
    (a 2-core machine under a burst of connections), the threads share cores and the queue drains
    slower than that: the wait was underestimated by up to 1.5x (accepted p99 1.8 s for a 1 s
    max_queue_ms). This measures the drain directly: work completed over wall time, in windows of
    at least `window_s` during which the queue stayed backlogged, weighted exponentially. A window
    ends early (and is not counted) when the queue runs dry; samples older than `stale_s` are
    forgotten, since they describe a load that is gone.
    """

    def __init__(self, window_s: float = 0.5, weight: float = 0.3, stale_s: float = 10.0):
        self.window_s, self.weight, self.stale_s = window_s, weight, stale_s
        self.rate: float | None = None  # tokens of work per second, all backends together
        self.sampled_at = -math.inf
        self._start: float | None = None  # the current backlogged window
        self._work = 0.0

    def completed(self, work: float, now: float, backlogged: bool) -> None:
        """A batch of `work` finished at `now`; `backlogged`: more work was waiting when it did."""
        if self._start is None:
            self._start, self._work = now, 0.0  # the window starts at the first completion seen
        else:
            self._work += work
            if now - self._start >= self.window_s:
                sample = self._work / (now - self._start)
                fresh = self.rate is not None and now - self.sampled_at <= self.stale_s
                self.rate = sample if not fresh else self.rate + self.weight * (sample - self.rate)
                self.sampled_at = now
                self._start, self._work = now, 0.0
        if not backlogged:
            self._start = None  # idle time ahead: the next window starts at the next completion

    def current(self, now: float) -> float | None:
        return self.rate if self.rate is not None and now - self.sampled_at <= self.stale_s else None


class PassingWork:
    """The most work of newer entries that went to the backend before an entry, in recent batches.

    Batches group similar lengths out of the sort window, so an entry can be passed by newer entries of
    other lengths while it waits: its wait is the work ahead of it at admission plus that. Admission adds
    the most seen among the last `samples` entries taken and those still waiting in the window. Measured
    rather than bounded (the window slides past the entries it skips, so the bound is loose): nothing
    when lengths are alike (batches are then first come, first served). Nothing before the first batch.
    """

    def __init__(self, samples: int = 1024):
        self._taken: deque[float] = deque(maxlen=samples)
        self.work = 0.0  # tokens of work, as batches count it

    def observe(self, taken: Sequence[float], waiting: float) -> None:
        """`taken`: what the entries of a batch were passed by; `waiting`: the most any entry left waits with."""
        self._taken.extend(taken)
        self.work = max(max(self._taken, default=0.0), waiting)


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
        outside_wait: Callable[[], float] | None = None,
        threads: bool = True,
    ):
        self.backend = backend
        self.config = config or BatchingConfig()
        self.observer = observer or _NullObserver()
        self.name = name
        self._clock = clock
        # Seconds an admitted request also waits outside this queue (the event loop, service.loop_lag)
        self._outside_wait = outside_wait or (lambda: 0.0)
        self._cond = threading.Condition()
        self._queue: deque[Entry] = deque()
        self._queued_tokens = 0
        self._queued_entries = 0  # live entries (cancelled ones leave the count at once)
        self._reserved_entries = 0  # estimated sizes of admitted requests not submitted yet
        self._reserved_tokens = 0
        self._next: list[Entry] | None = None  # sealed batch waiting for the backend thread
        self._next_work = 0  # its work, overhead included
        self._running = 0  # batches the backend threads are running now
        self._closing = False
        self._stopped = False
        self._seq = itertools.count()
        self._throughput = Throughput(self.config.prior_tokens_per_s)
        self._drain = DrainRate()
        self._passing = PassingWork()
        if self.config.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.config.workers}")
        self._scheduler = threading.Thread(target=self._schedule_loop, name=f"batcher-{name}", daemon=True)
        self._runners = [
            threading.Thread(target=self._run_loop, name=f"backend-{name}-{i}", daemon=True)
            for i in range(self.config.workers)
        ]
        if threads:  # False: no threads; a simulation drives the batcher (tests/service/batcher_sim.py)
            self._scheduler.start()
            for runner in self._runners:
                runner.start()

    # --- caller side -------------------------------------------------------------------------

    def admit(self, entries: int, tokens: int) -> Reservation:
        """Admit a request of about `entries` sequences and `tokens` tokens before it is tokenized.

        Raises QueueFullError when the work queued ahead would take longer than max_queue_ms,
        RequestTooLargeError when `entries` alone exceed the queue, BatcherClosedError when
        closing. The reservation counts as work ahead of later requests until `submit` (or
        `release`) replaces it.
        """
        if entries > self.config.max_queue_requests:
            raise RequestTooLargeError(self._too_large(entries, tokens))
        with self._cond:
            self._check_open_locked()
            self._check_wait_locked()
            self._reserved_entries += entries
            self._reserved_tokens += tokens
        return Reservation(entries, tokens)

    def release(self, reservation: Reservation) -> None:
        """Give back a reservation that will not be submitted (idempotent)."""
        with self._cond:
            self._release_reservation_locked(reservation)

    def submit(self, items: Sequence[Item], reservation: Reservation | None = None) -> list[Future]:
        """Queue all items or none: raises QueueFullError, RequestTooLargeError or BatcherClosedError.

        With the `reservation` of `admit` the wait was already checked and only the hard caps are;
        without one, the wait is checked here.
        """
        items = list(items)
        tokens = sum(item.length for item in items)
        cfg = self.config
        with self._cond:
            if reservation is not None:
                self._release_reservation_locked(reservation)
            if len(items) > cfg.max_queue_requests or tokens > cfg.max_queue_tokens:
                raise RequestTooLargeError(self._too_large(len(items), tokens))
            self._check_open_locked()
            if reservation is None:
                self._check_wait_locked()
            self._check_caps_locked(len(items), tokens)
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

    def refusal(self) -> QueueFullError | None:
        """The QueueFullError `admit` would raise now for any request (the work queued ahead is over
        max_queue_ms), else None. Read without reserving: a fast refusal before the body is parsed."""
        with self._cond:
            if self._closing:
                return None  # `admit` answers that one (503)
            try:
                self._check_wait_locked()
            except QueueFullError as err:
                return err
        return None

    @property
    def estimated_wait_s(self) -> float:
        """Seconds the work queued ahead of a new request would take at the measured throughput."""
        with self._cond:
            return self._seconds_locked(self._work_ahead_locked())

    def warm_up(self, batches: Sequence[list[Any]], length: Callable[[Any], int]) -> None:
        """Run `batches` of payloads on the backend in this thread before serving (first-run costs), then
        the largest once more, timed: its rate replaces `prior_tokens_per_s` until the first real batch."""
        for batch in batches:
            self.backend.run(batch)
        if not batches:
            return
        largest = max(batches, key=lambda batch: padded_cost([length(p) for p in batch]))
        lengths = [length(p) for p in largest]
        start = self._clock()
        self.backend.run(largest)
        seconds, padded = self._clock() - start, padded_cost(lengths)
        with self._cond:
            self._throughput.observe(self.config.overhead_tokens + padded, seconds, padded, sum(lengths), prior=True)

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

    # --- admission -----------------------------------------------------------------------------

    def _too_large(self, entries: int, tokens: int) -> str:
        cfg = self.config
        return (
            f"the request needs {entries} sequences / {tokens} tokens but model {self.name!r} queues at most "
            f"{cfg.max_queue_requests} sequences / {cfg.max_queue_tokens} tokens; split it into smaller requests"
        )

    def _check_open_locked(self) -> None:
        if self._closing:
            raise BatcherClosedError(f"model {self.name!r} is shutting down")

    def _release_reservation_locked(self, reservation: Reservation) -> None:
        if not reservation.released:
            reservation.released = True
            self._reserved_entries -= reservation.entries
            self._reserved_tokens -= reservation.tokens

    def _work_locked(self, entries: int, tokens: int) -> float:
        """Work of `entries` queued sequences of `tokens` real tokens, as the batches will cost it."""
        if entries <= 0:
            return 0.0
        cfg = self.config
        padded = tokens * self._throughput.padding
        size = min(cfg.max_batch_size, self._throughput.size or cfg.max_batch_size)  # sequences per batch
        batches = math.ceil(max(entries / size, padded / cfg.max_batch_tokens))
        return padded + cfg.overhead_tokens * batches

    def _work_ahead_locked(self) -> float:
        entries = self._queued_entries + self._reserved_entries
        tokens = self._queued_tokens + self._reserved_tokens
        passing = self._passing.work if entries or self._next_work else 0.0  # only with work ahead
        return self._work_locked(entries, tokens) + self._next_work + passing

    def _seconds_locked(self, work: float) -> float:
        rate = self.config.workers * self._throughput.tokens_per_s  # every backend thread on its own core
        drained = self._drain.current(self._clock())
        return work / (min(rate, drained) if drained else rate)

    def _check_wait_locked(self) -> None:
        cfg = self.config
        if cfg.max_queue_ms is None:
            return
        work = self._work_ahead_locked()
        queued, budget = self._seconds_locked(work), cfg.max_queue_ms / 1000
        # The wait outside the queue counts only with work ahead: a request to an empty queue runs in
        # the next batch, and refusing it would leave the model idle (never a refusal at idle).
        outside = max(0.0, self._outside_wait()) if work > 0 else 0.0
        if queued + outside > budget:
            also = f" plus about {outside * 1000:.0f} ms for the event loop" if outside >= 0.0005 else ""
            raise QueueFullError(
                f"model {self.name!r} is overloaded: the work queued ahead would take about {queued * 1000:.0f} ms"
                f"{also}, more than max_queue_ms ({cfg.max_queue_ms:g})",
                _retry_after(queued + outside - budget),
            )

    def _check_caps_locked(self, entries: int, tokens: int) -> None:
        cfg = self.config
        over_entries = self._queued_entries + entries - cfg.max_queue_requests
        over_tokens = self._queued_tokens + tokens - cfg.max_queue_tokens
        if over_entries <= 0 and over_tokens <= 0:
            return
        # Retry when the share of the queue over the cap has run.
        share = max(over_entries / max(self._queued_entries, 1), over_tokens / max(self._queued_tokens, 1))
        drain = min(share, 1.0) * self._seconds_locked(self._work_locked(self._queued_entries, self._queued_tokens))
        raise QueueFullError(
            f"model {self.name!r} is overloaded ({self._queued_entries} sequences, "
            f"{self._queued_tokens} tokens queued)",
            _retry_after(drain),
        )

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
                    self._next_work = self.config.overhead_tokens + padded_cost([e.length for e in batch])
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
        self._count_passing_locked(window, batch, chosen)
        if len(batch) < len(window):  # not a queue that ran dry: the size lengths and budgets allow
            self._throughput.observe_size(len(batch))
        self._queue = deque(e for e in self._queue if id(e) not in chosen)
        for entry in batch:
            self._release_locked(entry)
        return batch

    def _count_passing_locked(self, window: list[Entry], batch: list[Entry], chosen: set[int]) -> None:
        """Charge each entry the batch passes with the work of the newer entries in it; remember what the
        batch's own entries were charged."""
        share = (self.config.overhead_tokens + padded_cost([e.length for e in batch])) / len(batch)
        newer = sorted(e.seq for e in batch)
        for entry in window:  # only the window can be passed: every entry after it is newer than all of it
            if id(entry) not in chosen:
                entry.passed_by += share * (len(newer) - bisect.bisect_right(newer, entry.seq))
        waiting = max((e.passed_by for e in window if id(e) not in chosen), default=0.0)
        self._passing.observe([e.passed_by for e in batch], waiting)

    # --- backend threads -----------------------------------------------------------------------

    def _run_loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._next is not None:  # sealed by the scheduler while every worker was busy
                        batch, self._next, self._next_work = self._next, None, 0
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
        with self._cond:
            self._throughput.observe(self.config.overhead_tokens + padded, run_seconds, padded, sum(lengths))
            backlogged = self._queued_entries > 0 or self._next is not None
            self._drain.completed(self.config.overhead_tokens + padded, self._clock(), backlogged)
        self.observer.on_batch(
            BatchStats(
                size=len(live),
                padded_tokens=padded,
                real_tokens=sum(lengths),
                queue_seconds=[start - e.enqueued for e in live],
                run_seconds=run_seconds,
            )
        )


def _retry_after(seconds: float) -> int:
    """Whole seconds for a Retry-After header: rounded up, at least 1."""
    return max(1, math.ceil(seconds))


def _fail(future: Future, err: BaseException) -> None:
    try:
        future.set_exception(err)
    except InvalidStateError:  # cancelled meanwhile
        pass
