"""ThreadWaiter: a thread's result wakes the awaiting task in one event-loop iteration."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service.thread_waiter import ThreadWaiter


def test_result_from_a_thread_wakes_the_task_in_the_next_iteration():
    async def main():
        loop = asyncio.get_running_loop()
        waiter, order = ThreadWaiter(loop), []

        async def wait():
            order.append(("woke", await waiter))

        task = asyncio.ensure_future(wait())
        await asyncio.sleep(0)  # the task now waits
        thread = threading.Thread(target=waiter.set_from_thread, args=(42,))
        thread.start()
        thread.join()
        loop.call_soon(order.append, "next iteration")  # queued after the wake-up
        await task
        return order

    # an asyncio.Future set with call_soon_threadsafe would wake the task one iteration later, after the marker
    assert asyncio.run(main()) == [("woke", 42), "next iteration"]


def test_exception_is_raised_in_the_task():
    async def main():
        waiter = ThreadWaiter(asyncio.get_running_loop())
        threading.Thread(target=waiter.set_from_thread, args=(None, ValueError("bad input"))).start()
        await waiter

    with pytest.raises(ValueError, match="bad input"):
        asyncio.run(main())


def test_timeout_cancels_it_and_a_late_result_is_ignored():
    async def main():
        waiter = ThreadWaiter(asyncio.get_running_loop())
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await waiter
        assert waiter.cancelled() and not waiter.set_from_thread(1)

    asyncio.run(main())


def test_cancelling_the_task_raises_cancelled_error_in_it():
    async def main():
        waiter = ThreadWaiter(asyncio.get_running_loop())

        async def wait():
            return await waiter

        task = asyncio.ensure_future(wait())
        await asyncio.sleep(0)
        task.cancel()  # what a disconnect does (service.deps.until_disconnect)
        with pytest.raises(asyncio.CancelledError):
            await task
        assert waiter.cancelled()

    asyncio.run(main())
