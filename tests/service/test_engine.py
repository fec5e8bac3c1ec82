"""ModelEngine: one trip off the event loop per request (tokenize, queue, answer)."""

from __future__ import annotations

import asyncio
import threading

from service.engine import Deadline
from service.main import create_app
from tests.service.conftest import make_settings


def test_a_burst_is_tokenized_and_queued_together(tiny_bundles):
    app = create_app(make_settings([tiny_bundles["sequence-classification"]]))

    async def main():
        async with app.router.lifespan_context(app):
            engine = next(iter(app.state.bertkit.registry.engines.values()))
            calls, submit_each = [], engine.batcher.submit_each
            engine.batcher.submit_each = lambda requests: calls.append(len(requests)) or submit_each(requests)
            alone = await engine.classify(["a fine film"], None, False, Deadline(None))
            burst = await asyncio.gather(
                *(engine.classify([f"a fine film {i}"], None, False, Deadline(None)) for i in range(40))
            )
            return alone, burst, calls

    alone, burst, calls = asyncio.run(main())
    assert len(burst) == 40 and alone[0][0].keys() == burst[0][0][0].keys()
    assert calls[0] == 1 and sum(calls[1:]) == 40 and len(calls) - 1 < 40  # several requests per submit


def test_a_request_given_up_while_tokenizing_is_never_queued(tiny_bundles):
    app = create_app(make_settings([tiny_bundles["sequence-classification"]]))

    async def main():
        async with app.router.lifespan_context(app):
            engine = next(iter(app.state.bertkit.registry.engines.values()))
            submitted, submit_each = [], engine.batcher.submit_each
            engine.batcher.submit_each = lambda requests: submitted.extend(requests) or submit_each(requests)
            gate = threading.Event()
            held = [engine._pool.submit(gate.wait, 5) for _ in range(2)]  # both tokenizer threads busy
            work = asyncio.ensure_future(engine.classify(["a fine film"], None, False, Deadline(None)))
            await asyncio.sleep(0.05)  # admitted, waiting for the tokenizer pool
            work.cancel()  # the client left
            await asyncio.gather(work, return_exceptions=True)
            gate.set()
            for h in held:
                h.result(2)
            await asyncio.sleep(0.1)  # the pool job that would have taken it has run
            return submitted, engine.batcher.estimated_wait_s

    submitted, wait = asyncio.run(main())
    assert submitted == [] and wait == 0.0  # never queued, and its reservation was released
