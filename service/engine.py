"""Per-model engines: tokenize off the event loop, queue through the model's batcher, post-process.

Route handlers call `ModelEngine.classify / ner / qa / embed / fill_mask / tokenize` and get plain
dicts matching `service.schemas`. Pre- and post-processing (tokenization, NER and QA windows,
softmax, window merging, entity aggregation, answer search) are core.inference's, the code
`bert evaluate` scores with; this module only queues the model inputs and shapes the answers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.batches import ModelInput
from core.inference.classify import classify as classify_logits
from core.inference.classify import encode_classify, softmax
from core.inference.ner import aggregate, encode_ner, merge_outputs
from core.inference.qa import QaWindows, answer_windows, encode_qa, model_inputs
from model.tokenizer import BertTokenizer
from service.batching import (
    Batcher,
    BatcherClosedError,
    DeadlineExceededError,
    Item,
    QueueFullError,
    RequestTooLargeError,
)
from service.errors import (
    DeadlineError,
    InvalidInputError,
    ModelNotFoundError,
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


class ModelEngine:
    def __init__(
        self,
        bundle: Any,
        batcher: Batcher,
        tokenize_pool: ThreadPoolExecutor,
        metrics: Metrics,
        device: str = "cpu",
    ):
        self.bundle = bundle
        self.name: str = bundle.name
        self.task: str = bundle.task
        self.labels: list[str] | None = list(bundle.labels) if bundle.labels else None
        self.max_seq_len: int = int(bundle.max_seq_len)
        self.problem_type = getattr(bundle, "problem_type", None)
        manifest = getattr(bundle, "manifest", None)
        self.bundle_task_config: dict = dict(getattr(manifest, "task_config", None) or {})  # strides of fine-tuning
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

    async def infer(self, inputs: list[ModelInput], deadline: Deadline) -> list[dict[str, np.ndarray]]:
        """Queue sequences through the batcher and wait for all of them, in order."""
        if not inputs:
            return []
        items = [Item(payload=x, length=len(x), deadline=deadline.at) for x in inputs]
        try:
            futures = self.batcher.submit(items)
        except QueueFullError as err:
            self._metrics.rejected.labels(self.name).inc()
            raise OverloadedError(f"{err}; retry later", err.retry_after_s) from None
        except RequestTooLargeError as err:
            raise PayloadTooLargeError(str(err)) from None
        except BatcherClosedError as err:
            raise UnavailableError(str(err)) from None
        if len(futures) == 1:  # the common case: no gather around one future
            waiter = asyncio.wrap_future(futures[0])
        else:
            waiter = asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        try:
            outputs = await asyncio.wait_for(waiter, deadline.remaining())
            return [outputs] if len(futures) == 1 else list(outputs)
        except (TimeoutError, DeadlineExceededError):
            raise DeadlineError("the request's deadline passed before the model answered") from None
        finally:
            for f in futures:  # a timed-out or cancelled request frees its queue slots at once
                f.cancel()
            waiter.add_done_callback(lambda g: g.cancelled() or g.exception())  # mark the outcome as seen

    def _check_length(self, field: str, length: int, truncate_hint: bool) -> None:
        if length > self.max_seq_len:
            hint = "; shorten it or set truncate: true" if truncate_hint else "; shorten it"
            raise InvalidInputError(
                field, f"has {length} tokens but model {self.name!r} takes at most {self.max_seq_len}{hint}"
            )

    # --- tasks ---------------------------------------------------------------------------------

    async def classify(self, inputs: list, top_k: int | None, truncate: bool, deadline: Deadline) -> list[list[dict]]:
        max_length = self.max_seq_len if truncate else None
        encodings, model_inputs = await self._tokenize(lambda tok: encode_classify(tok, inputs, max_length))
        for i, enc in enumerate(encodings):
            self._check_length(f"inputs[{i}]", len(enc), truncate_hint=True)
        outputs = await self.infer(model_inputs, deadline)
        return [classify_logits(o["logits"], self.labels, self.problem_type, top_k) for o in outputs]

    async def embed(self, inputs: list[str], normalize: bool, truncate: bool, deadline: Deadline) -> list[list[float]]:
        max_length = self.max_seq_len if truncate else None
        encodings, model_inputs = await self._tokenize(lambda tok: encode_classify(tok, inputs, max_length))
        for i, enc in enumerate(encodings):
            self._check_length(f"inputs[{i}]", len(enc), truncate_hint=True)
        outputs = await self.infer(model_inputs, deadline)
        vectors = []
        for o in outputs:
            v = np.asarray(o["embeddings"], dtype=np.float64)
            if normalize:
                v = v / max(float(np.linalg.norm(v)), 1e-12)
            vectors.append([float(x) for x in v])
        return vectors

    async def ner(
        self, texts: list[str], strategy: str, ignore_labels: list[str] | None, stride: int | None, deadline: Deadline
    ) -> list[list[dict]]:
        if stride is None:
            stride = self.bundle_task_config.get("doc_stride")
        inputs, plans = await self._tokenize(lambda tok: encode_ner(tok, texts, self.max_seq_len, stride))
        outputs = await self.infer(inputs, deadline)
        return [
            aggregate(text, plan.tokens, logits, self.labels, strategy, ignore_labels) if plan.tokens else []
            for text, plan, logits in zip(texts, plans, merge_outputs(plans, outputs))
        ]

    async def qa(
        self,
        pairs: list[tuple[str, str]],
        top_k: int,
        max_answer_len: int,
        doc_stride: int | None,
        handle_impossible: bool,
        deadline: Deadline,
    ) -> list[list[dict]]:
        windows = QaWindows.from_task_config(self.max_seq_len, self.bundle_task_config)
        if doc_stride is not None:
            windows = QaWindows(windows.max_seq_len, doc_stride, windows.max_query_len)
        try:
            windows.check()
        except ValueError as err:
            raise InvalidInputError("doc_stride", f"cannot be used with model {self.name!r}: {err}") from None
        encoded = await self._tokenize(lambda tok: encode_qa(tok, pairs, windows))
        outputs = iter(await self.infer(model_inputs(encoded), deadline))
        results = []
        for (_, context), pair_windows in zip(pairs, encoded):
            found = answer_windows(
                pair_windows,
                [next(outputs) for _ in pair_windows],
                context,
                top_k=top_k + 5,
                max_answer_len=max_answer_len,
            )
            answers = [{"answer": s.text, "score": s.probability, "start": s.start, "end": s.end} for s in found.spans]
            if handle_impossible:
                answers.append({"answer": "", "score": found.null_probability, "start": 0, "end": 0})
            answers.sort(key=lambda a: -a["score"])
            if not answers:  # no token of the context can hold an answer (e.g. only whitespace)
                answers = [{"answer": "", "score": 0.0, "start": 0, "end": 0}]
            results.append(answers[:top_k])
        return results

    async def fill_mask(self, texts: list[str], top_k: int, deadline: Deadline) -> list[list[list[dict]]]:
        mask_id = self.tokenizer.mask_id
        encodings = await self._tokenize(lambda tok: tok.encode_batch(texts))
        for i, enc in enumerate(encodings):
            if mask_id not in enc.ids:
                raise InvalidInputError(f"inputs[{i}]", "holds no [MASK] token; put [MASK] where a word should go")
            self._check_length(f"inputs[{i}]", len(enc), truncate_hint=False)
        outputs = await self.infer([ModelInput(e.ids, e.type_ids) for e in encodings], deadline)
        vocab_size = self.tokenizer.vocab_size
        results = []
        for enc, out in zip(encodings, outputs):
            per_mask = []
            for pos in (p for p, token_id in enumerate(enc.ids) if token_id == mask_id):
                probs = softmax(out["logits"][pos][:vocab_size])  # (V,)
                best = np.argsort(-probs, kind="stable")[:top_k]
                predictions = []
                for token_id in best:
                    filled = list(enc.ids[1:-1])  # without [CLS] / [SEP]
                    filled[pos - 1] = int(token_id)
                    predictions.append(
                        {
                            "token": int(token_id),
                            "token_str": self.tokenizer.decode([int(token_id)]),
                            "score": float(probs[token_id]),
                            "sequence": self.tokenizer.decode(filled, skip_special_tokens=False),
                        }
                    )
                per_mask.append(predictions)
            results.append(per_mask)
        return results

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


class Registry:
    """Loaded models by name; the first model of each task is that task's default."""

    def __init__(self) -> None:
        self.engines: dict[str, ModelEngine] = {}
        self.defaults: dict[str, str] = {}

    def add(self, engine: ModelEngine) -> None:
        if engine.name in self.engines:
            raise ValueError(f"two bundles are named {engine.name!r}; bundle names must be unique")
        self.engines[engine.name] = engine
        self.defaults.setdefault(engine.task, engine.name)

    def get(self, task: str, name: str | None) -> ModelEngine:
        loaded = ", ".join(f"{n} ({e.task})" for n, e in self.engines.items()) or "none"
        if name is None:
            if task not in self.defaults:
                raise ModelNotFoundError(f"no {task} model is loaded; loaded models: {loaded}")
            return self.engines[self.defaults[task]]
        engine = self.engines.get(name)
        if engine is None:
            raise ModelNotFoundError(f"model {name!r} is not loaded; loaded models: {loaded}")
        if engine.task != task:
            raise InvalidInputError(
                "model", f"{name!r} is a {engine.task} model; send it to {TASK_ROUTES.get(engine.task, 'its endpoint')}"
            )
        return engine

    def get_any(self, name: str | None) -> ModelEngine:
        """Any task (for /v1/tokenize): the named model, or the first one loaded."""
        if name is None:
            if not self.engines:
                raise ModelNotFoundError("no model is loaded")
            return next(iter(self.engines.values()))
        if name not in self.engines:
            raise ModelNotFoundError(
                f"model {name!r} is not loaded; loaded models: {', '.join(self.engines) or 'none'}"
            )
        return self.engines[name]
