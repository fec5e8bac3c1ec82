"""Per-model engines: tokenize off the event loop, queue through the model's batcher, post-process.

Route handlers call `ModelEngine.classify / ner / qa / embed / fill_mask / tokenize` and get plain
dicts matching `service.schemas`. Pre- and post-processing (tokenization, NER and QA windows,
softmax, window merging, entity aggregation, answer search) and the shape of each answer are
core.inference's (core.inference.answers), the code `bert evaluate` scores with and offline
scoring (`bert predict --bundle`) answers with; this module only queues the model inputs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from core.inference.answers import (
    Classify,
    ClassifyOptions,
    Embed,
    EmbedOptions,
    FillMask,
    FillMaskOptions,
    InputError,
    ModelSpec,
    Ner,
    NerOptions,
    Qa,
    QaOptions,
)
from model.tokenizer import BertTokenizer
from service.batching import (
    Batcher,
    BatcherClosedError,
    DeadlineExceededError,
    Item,
    QueueFullError,
    RequestTooLargeError,
    Reservation,
)
from service.errors import (
    DeadlineError,
    InvalidInputError,
    OverloadedError,
    PayloadTooLargeError,
    UnavailableError,
)
from service.metrics import Metrics
from service.thread_waiter import ThreadWaiter

TASK_ROUTES = {
    "sequence-classification": "/v1/classify",
    "token-classification": "/v1/ner",
    "question-answering": "/v1/qa",
    "embedding": "/v1/embed",
    "fill-mask": "/v1/fill-mask",
}


WINDOWED_TASKS = ("token-classification", "question-answering")  # long inputs become several sequences


def estimate_tokens(inputs: list, max_per_input: int | None = None) -> int:
    """Tokens `inputs` will take, from their characters alone (admission runs before tokenization).

    About 4 characters a WordPiece token in English; a CJK character (3 UTF-8 bytes) is a token of
    its own; plus [CLS] and [SEP]s. `max_per_input` caps each input (truncated, or refused as too long).
    """
    total = 0
    for x in inputs:
        texts = x if isinstance(x, list | tuple) else (x,)
        tokens = 3
        for text in texts:
            if isinstance(text, str):
                wide = (len(text.encode("utf-8", "surrogatepass")) - len(text)) // 2  # about one per CJK character
                tokens += (len(text) - wide) // 4 + wide
        total += tokens if max_per_input is None else min(tokens, max_per_input)
    return total


class _ThreadTokenizers(threading.local):
    """One tokenizer copy per thread: the wrapper switches truncation on its Rust object per call."""

    def __init__(self, source: BertTokenizer):
        from tokenizers import Tokenizer

        self.tokenizer = BertTokenizer(Tokenizer.from_str(source.backend.to_str()), source.lowercase)


@dataclass
class Deadline:
    at: float | None  # time.monotonic() value, None = none

    def remaining(self) -> float | None:
        return None if self.at is None else max(0.0, self.at - time.monotonic())


def overloaded(err: QueueFullError) -> OverloadedError:
    """The batcher's refusal as the HTTP 429 a client sees (the routes' and the overload gate's)."""
    return OverloadedError(f"{err}; retry later", err.retry_after_s)


class ModelEngine:
    def __init__(
        self,
        bundle: Any,
        batcher: Batcher,
        tokenize_pool: ThreadPoolExecutor,
        metrics: Metrics,
        device: str = "cpu",
        name: str | None = None,
        version: str | None = None,
    ):
        self.bundle = bundle
        self.name: str = name or bundle.name  # a model store names its models after their directories
        self.version = version  # the model store's version directory; None for a bundle given by path
        self.task: str = bundle.task
        self.labels: list[str] | None = list(bundle.labels) if bundle.labels else None
        self.max_seq_len: int = int(bundle.max_seq_len)
        self.spec = replace(ModelSpec.of(bundle), name=self.name)  # what the answers need; messages name the model
        manifest = getattr(bundle, "manifest", None)
        self.batch_invariant: bool = bool(getattr(manifest, "batch_invariant", True))
        self.batcher = batcher
        self.device = device
        self._pool = tokenize_pool
        self._metrics = metrics
        self._tokenize_seconds = metrics.tokenize_seconds.labels(self.name)  # the labelled child, looked up once
        self._tokenizers = _ThreadTokenizers(bundle.tokenizer)
        self._waiting: list[_Trip] = []  # trips not yet taken by a tokenizer-pool job
        self._waiting_lock = threading.Lock()
        self._job_pending = False  # a pool job is submitted that has not yet taken `_waiting`
        self.tokenizer: BertTokenizer = bundle.tokenizer  # for read-only lookups (ids, vocab)

    @property
    def provider(self) -> str:
        providers = list(getattr(self.bundle, "providers", []) or [])
        return providers[0] if providers else "CPUExecutionProvider"

    # --- plumbing ------------------------------------------------------------------------------

    async def _tokenize(self, fn, *args):
        """Run `fn(tokenizer, *args)` on the tokenizer pool, with this thread's tokenizer copy."""

        def call():
            return fn(self._tokenizers.tokenizer, *args)

        start = time.perf_counter()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, call)
        finally:
            self._tokenize_seconds.observe(time.perf_counter() - start)

    @contextmanager
    def _queue_errors(self) -> Iterator[None]:
        """The batcher's refusals as HTTP errors: 429 + Retry-After, 413, 503."""
        try:
            yield
        except QueueFullError as err:
            self._metrics.rejected.labels(self.name).inc()
            raise overloaded(err) from None
        except RequestTooLargeError as err:
            raise PayloadTooLargeError(str(err)) from None
        except BatcherClosedError as err:
            raise UnavailableError(str(err)) from None

    @contextmanager
    def _admission(self, inputs: list) -> Iterator[Reservation]:
        """Admit the request before any tokenization (429 now if the work queued ahead is over
        max_queue_ms); its estimated tokens count as queued work until `infer` submits it."""
        cap = None if self.task in WINDOWED_TASKS else self.max_seq_len
        with self._queue_errors():
            reservation = self.batcher.admit(len(inputs), estimate_tokens(inputs, cap))
        try:
            yield reservation
        finally:
            self.batcher.release(reservation)

    def _start(self, trip: _Trip) -> None:
        """Queue `trip` for the tokenizer pool: one pool job takes every trip waiting when it starts."""
        with self._waiting_lock:
            self._waiting.append(trip)
            start_job, self._job_pending = not self._job_pending, True
        if start_job:
            try:
                self._pool.submit(self._tokenize_waiting)
            except RuntimeError:  # the pool is shut down
                with self._waiting_lock:
                    self._waiting.remove(trip)
                    self._job_pending = False
                raise

    def _tokenize_waiting(self) -> None:
        """(Tokenizer-pool thread.) Encode every waiting trip and queue them: the first at once (an idle
        model starts on it while the others are encoded), the rest in one hold of the batcher's lock, so
        the requests of a burst reach the batcher together and are batched together, not one by one."""
        with self._waiting_lock:
            trips, self._waiting, self._job_pending = self._waiting, [], False
        try:
            for group in (trips[:1], trips[1:]):
                encoded = [trip for trip in group if trip.encode(self._tokenizers.tokenizer)]
                live = [trip for trip in encoded if not trip.cancelled]  # a gone request's reservation is released
                outcomes = self.batcher.submit_each([(trip.items, trip.reservation) for trip in live]) if live else []
                for trip, outcome in zip(live, outcomes):
                    trip.queued(outcome)
        except BaseException as err:  # not the requests' fault: fail them all rather than leave them waiting
            for trip in trips:
                trip.fail(err)
            raise

    async def _answer(self, answerer, inputs: list, deadline: Deadline) -> list:
        """Admit on the loop, then encode, queue, wait and shape the answers (core.inference) in one
        trip off it (`_Trip`): the loop awaits one future."""
        with self._admission(inputs) as reservation:
            trip = _Trip(self, answerer, inputs, deadline, reservation, asyncio.get_running_loop())
            try:
                with self._queue_errors():
                    self._start(trip)
                    # asyncio.timeout, not wait_for: wait_for (Python 3.11) awaits a future of its own,
                    # one more event-loop iteration per request under load.
                    async with asyncio.timeout(deadline.remaining()):
                        return await trip.waiter
            except (TimeoutError, DeadlineExceededError):
                raise DeadlineError("the request's deadline passed before the model answered") from None
            except InputError as err:
                raise InvalidInputError(err.field, err.reason) from None
            finally:
                trip.cancel()  # a timed-out, failed or disconnected request frees its queue slots at once

    # --- tasks ---------------------------------------------------------------------------------

    async def classify(self, inputs: list, top_k: int | None, truncate: bool, deadline: Deadline) -> list[list[dict]]:
        return await self._answer(Classify(self.spec, ClassifyOptions(top_k, truncate)), inputs, deadline)

    async def embed(self, inputs: list[str], normalize: bool, truncate: bool, deadline: Deadline) -> list[list[float]]:
        return await self._answer(Embed(self.spec, EmbedOptions(normalize, truncate)), inputs, deadline)

    async def ner(
        self, texts: list[str], strategy: str, ignore_labels: list[str] | None, stride: int | None, deadline: Deadline
    ) -> list[list[dict]]:
        return await self._answer(Ner(self.spec, NerOptions(strategy, ignore_labels, stride)), texts, deadline)

    async def qa(
        self,
        pairs: list[tuple[str, str]],
        top_k: int,
        max_answer_len: int,
        doc_stride: int | None,
        handle_impossible: bool,
        deadline: Deadline,
    ) -> list:
        """Per pair, an answer (top_k 1) or a list of answers, as /v1/qa's results."""
        options = QaOptions(top_k, max_answer_len, doc_stride, handle_impossible)
        return await self._answer(Qa(self.spec, options), pairs, deadline)

    async def fill_mask(self, texts: list[str], top_k: int, deadline: Deadline) -> list[list[list[dict]]]:
        return await self._answer(FillMask(self.spec, FillMaskOptions(top_k)), texts, deadline)

    async def tokenize(self, inputs: list) -> list[dict]:
        pairs = [tuple(x) if isinstance(x, list | tuple) else x for x in inputs]
        encodings = await self._tokenize(lambda tok: tok.encode_batch(pairs))
        return [
            {
                "tokens": e.tokens,
                "ids": e.ids,
                "type_ids": e.type_ids,
                "offsets": [list(o) for o in e.offsets],
                "sequence_ids": e.sequence_ids,
            }
            for e in encodings
        ]


class _Trip:
    """One request's way from the tokenizer pool through the batcher to its answers, off the event loop.

    Under load one event-loop iteration lasts 0.1-0.2 s, and every hand-off of a request between a
    thread and the loop waits about one (service.loop_lag). So the loop makes one hand-off out (a
    tokenizer-pool job, `ModelEngine._tokenize_waiting`) and gets one back (`waiter`, a ThreadWaiter:
    one call_soon_threadsafe of the task's own wake-up). The pool thread encodes the inputs and
    submits them to the batcher; the backend thread that finishes the request's last sequence
    shapes the answers (core.inference) and hands them, or the first error, to the loop.

    `cancel` (the loop gave up: deadline, disconnect, error) stops a trip still being tokenized
    before it submits and cancels its queued sequences, which frees their queue slots at once.
    """

    def __init__(self, engine: ModelEngine, answerer, inputs: list, deadline: Deadline, reservation, loop):
        self.engine, self.answerer, self.inputs = engine, answerer, inputs
        self.deadline, self.reservation, self.loop = deadline, reservation, loop
        self.waiter = ThreadWaiter(loop)
        self.submitted = time.perf_counter()
        self._lock = threading.Lock()
        self._cancelled = self._finished = False
        self._futures: list[Future] = []
        self._outputs: list = []
        self._pending = 0
        self._state: Any = None
        self.items: list[Item] = []

    # --- tokenizer-pool thread -----------------------------------------------------------------

    def encode(self, tokenizer) -> bool:
        """Encode the inputs into `items`; False when there is nothing to queue (answered, failed or cancelled)."""
        if self._cancelled:
            return False
        try:
            try:
                model_inputs, self._state = self.answerer.encode(tokenizer, self.inputs)
            finally:
                self.engine._tokenize_seconds.observe(time.perf_counter() - self.submitted)
            if not model_inputs:
                self._answer()
                return False
            self.items = [Item(payload=x, length=len(x), deadline=self.deadline.at) for x in model_inputs]
            return True
        except Exception as err:  # InputError: the loop answers 422
            self._finish(None, err)
            return False

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def queued(self, outcome: list[Future] | Exception) -> None:
        """The batcher's answer to `submit_each`: the sequences' futures, or its refusal."""
        if isinstance(outcome, Exception):
            return self._finish(None, outcome)
        with self._lock:
            self._futures = outcome
            self._outputs, self._pending = [None] * len(outcome), len(outcome)
            cancelled = self._cancelled
        if cancelled:  # `cancel` ran between the check and the submit: free the slots now
            for future in outcome:
                future.cancel()
            return
        for i, future in enumerate(outcome):
            future.add_done_callback(lambda f, i=i: self._sequence_done(i, f))

    # --- backend thread (whichever finishes a sequence) ----------------------------------------

    def _sequence_done(self, i: int, future: Future) -> None:
        if future.cancelled():
            return  # by `cancel`: the loop no longer waits
        err = future.exception()
        if err is not None:
            return self._finish(None, err)
        with self._lock:
            self._outputs[i] = future.result()
            self._pending -= 1
            last = self._pending == 0
        if last:
            self._answer()

    def _answer(self) -> None:
        try:
            answers = self.answerer.answers(self._state, self._outputs)
        except BaseException as err:
            return self._finish(None, err)
        self._finish(answers, None)

    def fail(self, err: BaseException) -> None:
        self._finish(None, err)

    def _finish(self, answers, err: BaseException | None) -> None:
        """Hand the outcome to the loop, once."""
        with self._lock:
            if self._finished or self._cancelled:
                return
            self._finished = True
        self.waiter.set_from_thread(answers, err)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            futures = self._futures
        for future in futures:  # outside the lock: cancelling runs `_sequence_done` in this thread
            future.cancel()
