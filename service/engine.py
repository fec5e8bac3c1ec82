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
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from core.batches import ModelInput
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

    async def infer(
        self, inputs: list[ModelInput], deadline: Deadline, reservation: Reservation | None = None
    ) -> list[dict[str, np.ndarray]]:
        """Queue sequences through the batcher and wait for all of them, in order.

        With the `reservation` of an admitted request only the hard queue caps are checked here;
        without one, the wait bound too.
        """
        if not inputs:
            return []
        items = [Item(payload=x, length=len(x), deadline=deadline.at) for x in inputs]
        with self._queue_errors():
            futures = self.batcher.submit(items, reservation)
        if len(futures) == 1:  # the common case: no gather around one future
            waiter = asyncio.wrap_future(futures[0])
        else:
            waiter = asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        try:
            # asyncio.timeout, not wait_for: wait_for (Python 3.11) awaits a future of its own that the
            # waiter's callback completes, one more event-loop iteration per request under load.
            async with asyncio.timeout(deadline.remaining()):
                outputs = await waiter
            return [outputs] if len(futures) == 1 else list(outputs)
        except (TimeoutError, DeadlineExceededError):
            raise DeadlineError("the request's deadline passed before the model answered") from None
        finally:
            for f in futures:  # a timed-out or cancelled request frees its queue slots at once
                f.cancel()
            waiter.add_done_callback(lambda g: g.cancelled() or g.exception())  # mark the outcome as seen

    async def _answer(self, answerer, inputs: list, deadline: Deadline) -> list:
        """Admit, encode on the tokenizer pool, queue through the batcher, shape the answers (core.inference)."""
        with self._admission(inputs) as reservation:
            try:
                model_inputs, state = await self._tokenize(answerer.encode, inputs)
            except InputError as err:
                raise InvalidInputError(err.field, err.reason) from None
            outputs = await self.infer(model_inputs, deadline, reservation)
        return answerer.answers(state, outputs)

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
