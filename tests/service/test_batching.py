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
