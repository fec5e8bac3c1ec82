"""The batcher with a fake backend: budgets, sorting, cancellation, deadlines, ordering, overload."""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError, Future

import pytest

from service.batching import (
    Batcher,
    BatchingConfig,
    DeadlineExceededError,
    Entry,
    Item,
    QueueFullError,
    RequestTooLargeError,
    padded_cost,
    select_batch,
)


def _entries(lengths):
    return [Entry(Item(i, n), Future(), 0.0, i) for i, n in enumerate(lengths)]


def _blocked(fake_backend_cls, **config):
    """A batcher whose backend holds its first batch until `gate` is set."""
    gate = threading.Event()
    backend = fake_backend_cls(gate=gate)
    batcher = Batcher(backend, BatchingConfig(**config))
    first = batcher.submit([Item(-1, 1)])[0]
    assert backend.started.wait(2)
    return batcher, backend, gate, first


def test_padded_cost_counts_padding():
    assert padded_cost([3, 10, 4]) == 30
    assert padded_cost([]) == 0


def test_select_batch_respects_token_budget_with_padding():
    # oldest has length 10: 10 x 3 = 30 fits, a fourth would be 40
    batch = select_batch(_entries([10, 9, 9, 9, 9]), max_tokens=30, max_size=64)
    assert [e.length for e in batch] == [9, 9, 10]  # sorted by length, oldest included
    assert padded_cost([e.length for e in batch]) <= 30


def test_select_batch_groups_similar_lengths_and_keeps_oldest():
    entries = _entries([50, 3, 48, 4, 49, 2])
    batch = select_batch(entries, max_tokens=150, max_size=64)
    assert {e.length for e in batch} == {48, 49, 50}
    assert entries[0] in batch


def test_select_batch_max_size_and_oversized_oldest():
    assert len(select_batch(_entries([1] * 10), max_tokens=1000, max_size=4)) == 4
    lone = select_batch(_entries([500, 1, 1]), max_tokens=100, max_size=8)
    assert [e.length for e in lone] == [500]  # over budget alone still runs, alone


def test_results_return_to_the_right_caller_in_order(fake_backend_cls):
    backend = fake_backend_cls()
    batcher = Batcher(backend, BatchingConfig(max_batch_size=3))
    futures = batcher.submit([Item(i, 1 + i % 5) for i in range(20)])
    assert [f.result(2) for f in futures] == [i * 10 for i in range(20)]
    batcher.close(2)


def test_workers_run_batches_at_the_same_time(fake_backend_cls):
    gate = threading.Event()
    backend = fake_backend_cls(gate=gate)
    batcher = Batcher(backend, BatchingConfig(max_batch_size=1, workers=2))
    futures = batcher.submit([Item(i, 1) for i in range(3)])
    deadline = time.monotonic() + 2
    while len(backend.batches) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)
    assert backend.batches == [[0], [1]]  # two batches run at once, the third waits for a free worker
    gate.set()
    assert [f.result(2) for f in futures] == [0, 10, 20]
    batcher.close(2)
    with pytest.raises(ValueError, match="workers"):
        Batcher(backend, BatchingConfig(workers=0))


def test_batches_form_while_backend_busy_and_are_length_sorted(fake_backend_cls):
    batcher, backend, gate, first = _blocked(fake_backend_cls, max_batch_size=64, max_batch_tokens=1000)
    lengths = [30, 2, 29, 3, 31, 1]
    futures = batcher.submit([Item(i, n) for i, n in enumerate(lengths)])
    gate.set()
    assert [f.result(2) for f in futures] == [i * 10 for i in range(6)]
    assert first.result(2) == -10
    # what queued while busy is batched by length: the long ones (with the oldest), then the short ones
    assert backend.batches[1:] == [[2, 0, 4], [5, 1, 3]]
    batcher.close(2)


def test_overhead_decides_how_far_lengths_mix():
    lengths = [10, 12, 40, 44, 11, 42]
    tight = select_batch(_entries(lengths), max_tokens=10_000, max_size=64, overhead_tokens=8)
    assert sorted(e.length for e in tight) == [10, 11, 12]
    loose = select_batch(_entries(lengths), max_tokens=10_000, max_size=64, overhead_tokens=10_000)
    assert len(loose) == 6  # a batch's fixed cost dominates: pad rather than run another batch


def test_token_budget_splits_batches(fake_backend_cls):
    batcher, backend, gate, _ = _blocked(fake_backend_cls, max_batch_size=64, max_batch_tokens=40)
    futures = batcher.submit([Item(i, 10) for i in range(10)])
    gate.set()
    [f.result(2) for f in futures]
    assert [len(b) for b in backend.batches[1:]] == [4, 4, 2]
    batcher.close(2)


class Drops:
    def __init__(self):
        self.counts: dict[str, int] = {}

    def on_batch(self, stats):
        pass

    def on_drop(self, reason, count):
        self.counts[reason] = self.counts.get(reason, 0) + count


def test_cancelled_entries_are_dropped_before_inference(fake_backend_cls):
    batcher, backend, gate, _ = _blocked(fake_backend_cls)
    drops = batcher.observer = Drops()
    futures = batcher.submit([Item(i, 4) for i in range(6)])
    for f in futures[::2]:
        assert f.cancel()
    assert batcher.queued == (3, 12)  # cancelled entries free their capacity at once
    gate.set()
    assert [futures[i].result(2) for i in (1, 3, 5)] == [10, 30, 50]
    for f in futures[::2]:
        with pytest.raises(CancelledError):
            f.result(0)
    ran = [p for b in backend.batches for p in b]
    assert not {0, 2, 4} & set(ran)
    assert drops.counts == {"cancelled": 3}
    batcher.close(2)


def test_expired_entries_are_dropped_before_inference(fake_backend_cls):
    batcher, backend, gate, _ = _blocked(fake_backend_cls)
    drops = batcher.observer = Drops()
    late = batcher.submit([Item(7, 4, deadline=time.monotonic() + 0.01)])[0]
    fine = batcher.submit([Item(8, 4, deadline=time.monotonic() + 10)])[0]
    time.sleep(0.02)
    gate.set()
    with pytest.raises(DeadlineExceededError):
        late.result(2)
    assert fine.result(2) == 80
    assert 7 not in [p for b in backend.batches for p in b]
    assert drops.counts == {"deadline": 1}
    batcher.close(2)


def test_flood_is_refused_and_nothing_queued_is_lost(fake_backend_cls):
    batcher, backend, gate, _ = _blocked(fake_backend_cls, max_queue_requests=8, max_queue_tokens=10_000)
    accepted, refused = [], 0
    for i in range(20):
        try:
            accepted += batcher.submit([Item(i, 2)])
        except QueueFullError as err:
            refused += 1
            assert err.retry_after_s >= 1
    assert len(accepted) == 8 and refused == 12
    with pytest.raises(QueueFullError):  # all-or-nothing for a multi-input request
        batcher.submit([Item(100, 1), Item(101, 1)])
    gate.set()
    assert [f.result(2) for f in accepted] == [i * 10 for i in range(8)]
    batcher.close(2)


def test_token_bound_and_request_larger_than_queue(fake_backend_cls):
    batcher, backend, gate, _ = _blocked(fake_backend_cls, max_queue_requests=100, max_queue_tokens=50)
    batcher.submit([Item(0, 40)])
    with pytest.raises(QueueFullError):
        batcher.submit([Item(1, 20)])
    with pytest.raises(RequestTooLargeError):
        batcher.submit([Item(2, 30), Item(3, 30)])  # 60 tokens can never fit a 50-token queue
    gate.set()
    batcher.close(2)


def test_many_inputs_split_across_batches_and_reassembled(fake_backend_cls):
    backend = fake_backend_cls()
    batcher = Batcher(backend, BatchingConfig(max_batch_size=4, max_batch_tokens=64))
    lengths = [(i * 7) % 13 + 1 for i in range(30)]
    futures = batcher.submit([Item(i, n) for i, n in enumerate(lengths)])
    assert [f.result(2) for f in futures] == [i * 10 for i in range(30)]
    assert len(backend.batches) >= 8 and all(len(b) <= 4 for b in backend.batches)
    batcher.close(2)


def test_max_wait_seals_the_next_batch_while_busy(fake_backend_cls):
    batcher, backend, gate, _ = _blocked(fake_backend_cls, max_wait_ms=5)
    a = batcher.submit([Item(1, 3)])
    time.sleep(0.05)  # longer than max_wait: the next batch is sealed with only item 1
    b = batcher.submit([Item(2, 3)])
    gate.set()
    assert a[0].result(2) == 10 and b[0].result(2) == 20
    assert backend.batches[1] == [1] and backend.batches[2] == [2]
    batcher.close(2)


def test_backend_failure_fails_only_its_batch(fake_backend_cls):
    backend = fake_backend_cls(fail_on=3)
    batcher = Batcher(backend, BatchingConfig(max_batch_size=1))
    bad, good = batcher.submit([Item(3, 1), Item(4, 1)])
    with pytest.raises(RuntimeError):
        bad.result(2)
    assert good.result(2) == 40
    batcher.close(2)


def test_close_drains_queue(fake_backend_cls):
    backend = fake_backend_cls(delay=0.005)
    batcher = Batcher(backend, BatchingConfig(max_batch_size=2))
    futures = batcher.submit([Item(i, 1) for i in range(6)])
    batcher.close(2)
    assert all(f.done() for f in futures)
    assert [f.result(0) for f in futures] == [i * 10 for i in range(6)]


def test_close_waits_its_timeout_in_all_not_per_thread(fake_backend_cls):
    gate = threading.Event()
    backend = fake_backend_cls(gate=gate)
    batcher = Batcher(backend, BatchingConfig(max_batch_size=1, workers=3))
    futures = batcher.submit([Item(i, 1) for i in range(4)])  # three stuck in the backend, one queued
    deadline = time.monotonic() + 2
    while len(backend.batches) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    start = time.monotonic()
    batcher.close(0.4)
    assert time.monotonic() - start < 1.2  # not 0.4 s for each of the four threads
    gate.set()
    assert [f.result(2) for f in futures] == [0, 10, 20, 30]  # the work queued before close still finishes


# --- admission: bounded waiting ----------------------------------------------------------------


def test_requests_beyond_max_queue_ms_of_queued_work_are_refused_with_retry_after(fake_backend_cls):
    # Before the first batch is measured the batcher assumes prior_tokens_per_s: 500 tokens/s, so each
    # queued 10-token sequence is 20 ms of work ahead and a 100 ms budget admits five of them ahead.
    batcher, backend, gate, _ = _blocked(
        fake_backend_cls, max_batch_size=1, overhead_tokens=0, max_queue_ms=100, prior_tokens_per_s=500
    )
    accepted, refused = [], []
    for i in range(12):
        try:
            accepted += batcher.submit([Item(i, 10)])
        except QueueFullError as err:
            refused.append(err)
    assert len(accepted) == 6  # 0, 20, ..., 100 ms of work ahead: admitted; 120 ms: refused
    assert len(refused) == 6 and all(err.retry_after_s == 1 for err in refused)  # 20 ms over: rounded up to 1 s
    assert "max_queue_ms" in str(refused[0])
    gate.set()
    assert [f.result(2) for f in accepted] == [i * 10 for i in range(6)]  # FIFO, nothing lost
    batcher.close(2)


def test_retry_after_is_the_time_until_the_wait_fits_the_budget(fake_backend_cls):
    batcher, backend, gate, _ = _blocked(
        fake_backend_cls, max_batch_size=64, overhead_tokens=5, max_queue_ms=500, prior_tokens_per_s=100
    )
    batcher.submit([Item(0, 100), Item(1, 100), Item(2, 95)])  # 295 tokens + one batch's overhead: 3 s of work
    assert batcher.estimated_wait_s == pytest.approx(3.0)
    with pytest.raises(QueueFullError) as refused:
        batcher.submit([Item(3, 1)])
    assert refused.value.retry_after_s == 3  # 2.5 s until the wait is back under 0.5 s, rounded up
    gate.set()
    batcher.close(2)


def test_admission_before_tokenizing_holds_a_reservation_until_submit(fake_backend_cls):
    batcher, backend, gate, _ = _blocked(
        fake_backend_cls, max_batch_size=1, overhead_tokens=0, max_queue_ms=100, prior_tokens_per_s=500
    )
    first = batcher.admit(1, 60)  # nothing ahead: admitted; while it is tokenized, its 60 tokens count ahead
    with pytest.raises(QueueFullError):
        batcher.admit(1, 1)  # 120 ms of work ahead
    futures = batcher.submit([Item(7, 30)], first)  # the real size replaces the estimate: 60 ms ahead
    assert batcher.queued == (1, 30) and batcher.estimated_wait_s == pytest.approx(0.06)
    second = batcher.admit(1, 1)
    batcher.release(second)  # e.g. its input was invalid: the room is given back, once
    batcher.release(second)
    assert batcher.estimated_wait_s == pytest.approx(0.06)
    with pytest.raises(RequestTooLargeError):
        batcher.admit(batcher.config.max_queue_requests + 1, 1)  # refused before any tokenization too
    gate.set()
    assert futures[0].result(2) == 70
    batcher.close(2)


def test_throughput_counts_work_as_batches_cost_it():
    from service.batching import Throughput

    rate = Throughput(prior_tokens_per_s=1000)
    assert (rate.tokens_per_s, rate.padding) == (1000, 1.0)
    rate.observe(work=2000, seconds=0.5, padded=1600, real=1000)  # the first batch replaces the prior
    assert (rate.tokens_per_s, rate.padding) == (4000, 1.6)
    rate.observe(work=200, seconds=0.5, padded=100, real=100)
    assert rate.tokens_per_s == pytest.approx((0.8 * 2000 + 0.2 * 200) / 0.5)  # weighted by batch time
    assert rate.padding == pytest.approx((0.8 * 1600 + 0.2 * 100) / (0.8 * 1000 + 0.2 * 100))


def test_warm_up_times_a_batch_for_the_first_estimate(fake_backend_cls):
    backend = fake_backend_cls(delay=0.01)  # 10 ms a batch
    batcher = Batcher(backend, BatchingConfig(max_batch_size=1, overhead_tokens=0, prior_tokens_per_s=1))
    batcher.warm_up([[4, 4], [30, 30, 30, 30]], length=int)  # payloads are their lengths here
    assert backend.batches == [[4, 4], [30, 30, 30, 30], [30, 30, 30, 30]]  # the largest once more, timed
    backend.gate = threading.Event()
    batcher.submit([Item(0, 1)])  # runs, held
    assert backend.started.wait(2)
    batcher.submit([Item(i, 120) for i in range(1, 11)])  # 10 batches of 120 tokens, about 10 ms each
    assert 0.09 < batcher.estimated_wait_s < 0.2  # about 0.1 s (sleeps overshoot), not 1,200 s at the prior
    backend.gate.set()
    batcher.close(2)


class QueueTimes:
    def __init__(self):
        self.seconds: list[float] = []
        self.run_seconds: list[float] = []

    def on_batch(self, stats):
        self.seconds += stats.queue_seconds
        self.run_seconds.append(stats.run_seconds)

    def on_drop(self, reason, count):
        pass


def _offer(batcher, stop: threading.Event, every_s: float, accepted: list, refused: list, length: int = 10):
    """Submit one-sequence requests every `every_s` seconds until `stop`; record what was accepted."""
    i = 0
    next_at = time.monotonic()
    while not stop.is_set():
        try:
            accepted += batcher.submit([Item(i, length)])
        except QueueFullError as err:
            refused.append(err)
        i += 1
        next_at += every_s
        time.sleep(max(0.0, next_at - time.monotonic()))


BATCH_S = 0.02  # the fake backend's time per batch: 4 sequences of 10 tokens, so 2,000 tokens/s


def _overload(backend, times: QueueTimes, seconds: float) -> tuple[list, list]:
    """One-sequence requests at 400/s for `seconds` into a batcher with a 150 ms budget: (accepted, refused)."""
    config = BatchingConfig(max_batch_size=4, overhead_tokens=0, max_queue_ms=150, prior_tokens_per_s=2000)
    batcher = Batcher(backend, config, observer=times)
    stop, accepted, refused = threading.Event(), [], []
    offer = threading.Thread(target=_offer, args=(batcher, stop, 0.0025, accepted, refused))
    offer.start()
    time.sleep(seconds)
    stop.set()
    offer.join()
    [f.result(5) for f in accepted]
    batcher.close(2)
    return accepted, refused


def test_accepted_requests_queue_at_most_max_queue_ms_plus_one_batch_under_overload(fake_backend_cls):
    times = QueueTimes()
    accepted, refused = _overload(fake_backend_cls(delay=BATCH_S), times, 1.5)  # 400/s for 200/s
    assert len(refused) > len(accepted) / 4  # really overloaded
    assert all(err.retry_after_s >= 1 for err in refused)
    batch = max(times.run_seconds)
    slack = 0.03  # thread wake-ups on a shared machine
    assert max(times.seconds) <= 0.150 + batch + slack, (max(times.seconds), batch)
    assert sorted(times.seconds)[len(times.seconds) // 2] > 0.08  # the budget was used, not refused early


def test_drain_rate_is_work_per_wall_second_over_backlogged_windows():
    from service.batching import DrainRate

    drain = DrainRate(window_s=0.5, weight=0.5, stale_s=10)
    drain.completed(100, now=0.0, backlogged=True)  # opens the window
    drain.completed(100, now=0.25, backlogged=True)
    assert drain.current(0.25) is None  # the window is not long enough yet
    drain.completed(100, now=0.5, backlogged=True)
    assert drain.current(0.5) == 400  # 200 tokens of work in 0.5 s
    drain.completed(300, now=1.0, backlogged=False)  # 600/s, then the queue ran dry
    assert drain.current(1.0) == pytest.approx(500)  # weighted half and half
    drain.completed(1000, now=5.0, backlogged=True)  # after idle time: opens a new window, no sample
    assert drain.current(5.0) == pytest.approx(500)
    assert drain.current(11.5) is None  # stale: the load it described is gone


class GapAfterEachBatch(QueueTimes):
    """Holds the backend thread after each batch, outside the timed run: as a thread that waits for a
    core (or the GIL) between batches, which per-batch timing cannot see."""

    def on_batch(self, stats):
        super().on_batch(stats)
        time.sleep(BATCH_S)


def test_the_wait_bound_holds_when_threads_lose_time_between_batches(fake_backend_cls):
    times = GapAfterEachBatch()
    _overload(fake_backend_cls(delay=BATCH_S), times, 2.5)  # 400/s for 100/s
    settled = times.seconds[len(times.seconds) // 2 :]  # admitted after the first drain-rate windows
    slack = 0.03  # thread wake-ups on a shared machine
    # Per-batch timing alone predicts half the real wait: accepted requests would queue ~300 ms.
    assert max(settled) <= 0.150 + 2 * BATCH_S + slack, max(settled)


def test_a_large_request_is_admitted_under_a_stream_of_small_ones(fake_backend_cls):
    # Small requests arrive at 1.5x capacity and keep the queue at its 150 ms budget. The large
    # request (40 sequences, 200 ms of work on its own) passes the same test as a small one, the
    # work ahead of it, so it gets in as soon as the queue ahead drains under the budget; a queue
    # bounded by a count of sequences that small requests keep full would refuse it forever.
    times = QueueTimes()
    config = BatchingConfig(max_batch_size=4, overhead_tokens=0, max_queue_ms=150, prior_tokens_per_s=2000)
    batcher = Batcher(fake_backend_cls(delay=BATCH_S), config, observer=times)
    stop, accepted, refused = threading.Event(), [], []
    offer = threading.Thread(target=_offer, args=(batcher, stop, 1 / 300, accepted, refused))
    offer.start()
    time.sleep(0.5)  # the queue is full of small requests by now
    large, tries, start = None, 0, time.monotonic()
    while large is None and time.monotonic() - start < 3:
        tries += 1
        try:
            large = batcher.submit([Item(1000 + i, 10) for i in range(40)])
        except QueueFullError:
            time.sleep(0.005)
    admitted_after = time.monotonic() - start
    time.sleep(0.3)  # small requests keep coming after it
    stop.set()
    offer.join()
    assert large is not None, f"the large request was refused {tries} times in 3 s"
    assert [f.result(5) for f in large] == [(1000 + i) * 10 for i in range(40)]
    [f.result(5) for f in accepted]
    batcher.close(2)
    assert refused  # small requests were being refused around it: the queue was at its budget
    assert admitted_after < 1.0, (admitted_after, tries)


def test_the_wait_outside_the_queue_counts_only_with_work_ahead(fake_backend_cls):
    # 10-token sequences at 500 tokens/s: 20 ms of work each; a 100 ms budget; the event loop adds 50 ms.
    outside = [0.05]
    gate = threading.Event()
    config = BatchingConfig(max_batch_size=1, overhead_tokens=0, max_queue_ms=100, prior_tokens_per_s=500)
    backend = fake_backend_cls(gate=gate)
    batcher = Batcher(backend, config, outside_wait=lambda: outside[0])
    outside[0] = 10.0  # however slow the loop, a request to an empty queue is admitted (the model would idle)
    assert batcher.refusal() is None
    first = batcher.submit([Item(0, 10)])
    assert backend.started.wait(2)  # running, so no longer ahead of anyone
    outside[0] = 0.05
    accepted = first + [f for i in range(1, 4) for f in batcher.submit([Item(i, 10)])]  # 20-60 ms queued + 50 ms
    with pytest.raises(QueueFullError) as refused:
        batcher.submit([Item(9, 10)])  # 60 ms queued (the first is running) + 50 ms > 100 ms
    assert refused.value.retry_after_s == 1 and "event loop" in str(refused.value)
    assert isinstance(batcher.refusal(), QueueFullError)  # the overload gate's read agrees
    outside[0] = 0.0
    assert batcher.refusal() is None  # without the loop's wait it fits
    gate.set()
    assert [f.result(2) for f in accepted] == [0, 10, 20, 30]
    batcher.close(2)
