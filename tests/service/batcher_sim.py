"""A deterministic simulation of one Batcher under a closed loop of clients: fake clock, no threads.

The batcher is built with `threads=False` and driven here as its scheduler and one backend thread
would drive it: an idle backend takes the sealed batch (or forms one), the scheduler seals the next
one as soon as the queue fills a batch while the backend is busy. The fake backend costs
`batch_s + token_s x padded tokens` of simulated time, during which clients keep arriving.

Each of `clients` connections sends a one-sentence request (SST-2-like lengths: median ~11 tokens,
a tail to 60), waits for its answer and sends the next after `think_s`. After a 429 a `hammer`
client sends again after `refusal_s` (the real server answers ~2,000 refusals/s to 1,024 of them),
a `retry-after` client waits the Retry-After seconds. The defaults are the demo's MiniLM on 2 cores:
~3 ms + 0.1 ms per padded token a batch. For every admitted request the simulation records the wait
admission estimated, the wait it really had in the queue (submit -> start of its batch) and how many
newer entries went before it.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field

from service.batching import Batcher, BatchingConfig, Item, QueueFullError, padded_cost


def sst2_length(rng: random.Random) -> int:
    """Tokens of one SST-2-like sentence: 4 + an exponential of mean 10, at most 60 (median ~11)."""
    return min(60, 4 + int(rng.expovariate(1 / 10)))


@dataclass
class Admitted:
    client: int
    length: int
    submitted: float
    estimated_s: float  # the wait admission estimated (work ahead / drain rate)
    seq: int  # arrival order in the batcher
    started: float | None = None  # start of its batch
    overtaken_by: int = 0  # newer entries that started before it

    @property
    def wait_s(self) -> float:
        return self.started - self.submitted


@dataclass
class SimResult:
    admitted: list[Admitted]
    refused: int
    seconds: float
    batch_seconds: list[float] = field(default_factory=list)

    def settled(self, skip_s: float = 2.0) -> list[Admitted]:
        """Requests admitted after the first `skip_s` (the drain rate measured) that have started."""
        return [a for a in self.admitted if a.submitted >= skip_s and a.started is not None]

    @staticmethod
    def quantile(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def wait_p(self, q: float) -> float:
        return self.quantile([a.wait_s for a in self.settled()], q)

    def throughput(self) -> float:
        """Admitted requests started per second after the first two seconds."""
        return len(self.settled()) / (self.seconds - 2.0)

    @property
    def mean_batch_s(self) -> float:
        return sum(self.batch_seconds) / len(self.batch_seconds)


class _Backend:
    def __init__(self, sim: Simulation):
        self.sim = sim

    def run(self, payloads: list[tuple[int, int]]) -> list[int]:
        sim = self.sim
        for ticket, _length in payloads:
            sim.on_start(ticket)
        seconds = sim.batch_s + sim.token_s * padded_cost([length for _, length in payloads])
        sim.batch_seconds.append(seconds)
        sim.advance(sim.now + seconds)
        return [ticket for ticket, _ in payloads]


class Simulation:
    def __init__(
        self,
        clients: int,
        config: BatchingConfig | None = None,
        client: str = "hammer",
        batch_s: float = 0.003,
        token_s: float = 0.0001,
        think_s: float = 0.002,
        refusal_s: float = 0.2,
        seed: int = 0,
    ):
        self.clients, self.client = clients, client
        self.batch_s, self.token_s, self.think_s, self.refusal_s = batch_s, token_s, think_s, refusal_s
        self.rng = random.Random(seed)
        self.now = 0.0
        self.config = config or BatchingConfig(overhead_tokens=16, prior_tokens_per_s=5000)
        self.batcher = Batcher(_Backend(self), self.config, clock=lambda: self.now, threads=False)
        self._arrivals: list[tuple[float, int, int]] = []  # (time, tiebreak, client)
        self._tiebreak = itertools.count()
        self._tickets: dict[int, Admitted] = {}
        self._next_ticket = itertools.count()
        self.admitted: list[Admitted] = []
        self.refused = 0
        self.batch_seconds: list[float] = []

    # --- clients -------------------------------------------------------------------------------

    def _send_at(self, when: float, client: int) -> None:
        heapq.heappush(self._arrivals, (when, next(self._tiebreak), client))

    def _arrive(self, client: int) -> None:
        batcher, length = self.batcher, sst2_length(self.rng)
        estimated = batcher.estimated_wait_s
        ticket = next(self._next_ticket)
        try:
            [future] = batcher.submit([Item((ticket, length), length)])
        except QueueFullError as err:
            self.refused += 1
            delay = self.refusal_s if self.client == "hammer" else err.retry_after_s
            self._send_at(self.now + delay, client)
            return
        record = Admitted(client, length, self.now, estimated, batcher._queue[-1].seq)
        self._tickets[ticket] = record
        self.admitted.append(record)
        future.add_done_callback(lambda _f: self._send_at(self.now + self.think_s, client))
        self._seal_next()

    def on_start(self, ticket: int) -> None:
        record = self._tickets.pop(ticket)
        record.started = self.now
        for other in self._tickets.values():  # still waiting: an older one is overtaken
            if other.seq < record.seq:
                other.overtaken_by += 1

    def advance(self, until: float) -> None:
        """Let clients arrive up to `until` (the backend is busy meanwhile)."""
        while self._arrivals and self._arrivals[0][0] <= until:
            when, _, client = heapq.heappop(self._arrivals)
            self.now = max(self.now, when)
            self._arrive(client)
        self.now = until

    # --- the batcher's threads -----------------------------------------------------------------

    def _seal_next(self) -> None:
        """The scheduler thread: while the backend is busy, seal the next batch once the queue fills one."""
        b = self.batcher
        with b._cond:
            if b._next is None and b._queued_entries > 0 and b._running > 0 and b._queue_fills_batch_locked():
                batch = b._take_batch_locked()
                if batch:
                    b._next = batch
                    b._next_work = b.config.overhead_tokens + padded_cost([e.length for e in batch])

    def _take(self):
        """An idle backend thread: the sealed batch, else one formed now."""
        b = self.batcher
        with b._cond:
            if b._next is not None:
                batch, b._next, b._next_work = b._next, None, 0
            else:
                batch = b._take_batch_locked() if b._queued_entries > 0 else None
            if batch:
                b._running += 1
        return batch

    def run(self, seconds: float) -> SimResult:
        for client in range(self.clients):  # connections open over the first 10 ms
            self._send_at(self.rng.uniform(0.0, 0.01), client)
        while self.now < seconds:
            batch = self._take()
            if batch is None:
                self.advance(self._arrivals[0][0])
                continue
            self._seal_next()
            self.batcher._run_batch(batch)
            with self.batcher._cond:
                self.batcher._running -= 1
        return SimResult(self.admitted, self.refused, self.now, self.batch_seconds)
