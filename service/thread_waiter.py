"""An awaitable that another thread completes with one event-loop hand-off, not two.

A task that awaits an `asyncio.Future` completed from a thread (`asyncio.wrap_future`, or
`loop.call_soon_threadsafe(future.set_result, ...)`) wakes two event-loop iterations later: the
first runs the callback that sets the result, which only schedules the task's wake-up for the
next. Under a thousand connections an iteration lasts 0.1-0.2 s (service.loop_lag), so that is
a whole iteration of latency per request for nothing.

`ThreadWaiter` speaks asyncio's future protocol (`_asyncio_future_blocking`, `get_loop`,
`add_done_callback`, `result`, `cancel`: what a Task needs of what it awaits, the protocol that
lets asyncio await other libraries' futures), and `set_from_thread` schedules the awaiting
task's wake-up itself, with one `call_soon_threadsafe`. Cancelling (the task is cancelled:
asyncio.timeout, a disconnect) is done on the loop and wakes the task with CancelledError, as
an asyncio.Future would; a result that arrives after that is ignored.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Generator
from typing import Any


class ThreadWaiter:
    _asyncio_future_blocking = False  # set while a task waits on it (the future protocol)

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._lock = threading.Lock()
        self._callbacks: list[tuple[Callable, Any]] = []  # (callback, its context)
        self._done = self._cancelled = False
        self._result: Any = None
        self._exception: BaseException | None = None

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return self._cancelled

    def result(self) -> Any:
        if self._cancelled:
            raise asyncio.CancelledError
        if not self._done:
            raise asyncio.InvalidStateError("result is not set")
        if self._exception is not None:
            raise self._exception
        return self._result

    def add_done_callback(self, fn: Callable, *, context=None) -> None:
        with self._lock:
            if not self._done:
                self._callbacks.append((fn, context))
                return
        self._loop.call_soon(fn, self, context=context)

    def remove_done_callback(self, fn: Callable) -> int:
        with self._lock:
            before = len(self._callbacks)
            self._callbacks = [(f, c) for f, c in self._callbacks if f != fn]
            return before - len(self._callbacks)

    def _complete(self, result: Any, exception: BaseException | None, cancelled: bool) -> list | None:
        """Set the outcome once; the callbacks to run, or None if it was already set."""
        with self._lock:
            if self._done:
                return None
            self._done, self._cancelled = True, cancelled
            self._result, self._exception = result, exception
            callbacks, self._callbacks = self._callbacks, []
        return callbacks

    def set_from_thread(self, result: Any, exception: BaseException | None = None) -> bool:
        """(Any thread.) Complete with `result` or `exception`; False if already done (cancelled)."""
        callbacks = self._complete(result, exception, cancelled=False)
        if callbacks is None:
            return False
        try:
            for fn, context in callbacks:  # the awaiting task's wake-up: it runs in the next iteration
                self._loop.call_soon_threadsafe(fn, self, context=context)
        except RuntimeError:  # the loop is closed (shutdown): nobody is left to wake
            pass
        return True

    def cancel(self, msg: Any = None) -> bool:
        """(Event loop.) What Task.cancel calls on what its task awaits."""
        callbacks = self._complete(None, None, cancelled=True)
        if callbacks is None:
            return False
        for fn, context in callbacks:
            self._loop.call_soon(fn, self, context=context)
        return True

    def __await__(self) -> Generator[Any, None, Any]:
        if not self._done:
            self._asyncio_future_blocking = True
            yield self  # the task registers its wake-up with add_done_callback
        return self.result()

    __iter__ = __await__
