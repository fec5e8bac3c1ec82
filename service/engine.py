"""Per-model engines: tokenize off the event loop, queue through the model's batcher, post-process.

Route handlers call `ModelEngine.classify / ner / qa / embed / fill_mask / tokenize` and get plain
dicts matching `service.schemas`; everything that touches the model lives here or in
`service.postprocess`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.tokenizer import BertTokenizer
from service.backends import ModelInput
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
from service.postprocess import best_answer_spans
from service.postprocess.classify import classify as classify_logits
from service.postprocess.classify import softmax
from service.postprocess.ner import Token, aggregate, merge_windows, window_spans

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
        pairs = [tuple(x) if isinstance(x, list | tuple) else x for x in inputs]
        max_length = self.max_seq_len if truncate else None
        encodings = await self._tokenize(lambda tok: tok.encode_batch(pairs, max_length=max_length))
        for i, enc in enumerate(encodings):
            self._check_length(f"inputs[{i}]", len(enc), truncate_hint=True)
        outputs = await self.infer([ModelInput(e.ids, e.type_ids) for e in encodings], deadline)
        return [classify_logits(o["logits"], self.labels, self.problem_type, top_k) for o in outputs]

    async def embed(self, inputs: list[str], normalize: bool, truncate: bool, deadline: Deadline) -> list[list[float]]:
        max_length = self.max_seq_len if truncate else None
        encodings = await self._tokenize(lambda tok: tok.encode_batch(inputs, max_length=max_length))
        for i, enc in enumerate(encodings):
            self._check_length(f"inputs[{i}]", len(enc), truncate_hint=True)
        outputs = await self.infer([ModelInput(e.ids, e.type_ids) for e in encodings], deadline)
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
        window = self.max_seq_len - 2  # content tokens per window: [CLS] ... [SEP]
        stride = window // 4 if stride is None else min(stride, window - 1)
        encodings = await self._tokenize(lambda tok: tok.encode_batch(texts))
        cls_id, sep_id, unk_id = self.tokenizer.cls_id, self.tokenizer.sep_id, self.tokenizer.unk_id
        per_text = []  # (tokens, spans)
        inputs: list[ModelInput] = []
        for enc in encodings:
            content = [i for i, special in enumerate(enc.special_tokens_mask) if not special]
            tokens = [
                Token(enc.offsets[i][0], enc.offsets[i][1], enc.word_ids[i], enc.tokens[i], enc.ids[i] == unk_id)
                for i in content
            ]
            spans = window_spans(len(tokens), window, stride) if tokens else []
            ids = [enc.ids[i] for i in content]
            inputs += [ModelInput([cls_id] + ids[s:e] + [sep_id]) for s, e in spans]
            per_text.append((tokens, spans))
        outputs = iter(await self.infer(inputs, deadline))
        results = []
        for text, (tokens, spans) in zip(texts, per_text):
            if not tokens:
                results.append([])
                continue
            window_logits = [next(outputs)["logits"][1:-1] for _ in spans]  # drop [CLS] / [SEP] rows
            logits = merge_windows(len(tokens), spans, window_logits)
            results.append(aggregate(text, tokens, logits, self.labels, strategy, ignore_labels))
        return results

    async def qa(
        self,
        pairs: list[tuple[str, str]],
        top_k: int,
        max_answer_len: int,
        doc_stride: int,
        handle_impossible: bool,
        deadline: Deadline,
    ) -> list[list[dict]]:
        def encode(tok: BertTokenizer):
            windows = []
            for i, (question, context) in enumerate(pairs):
                question_len = len(tok.encode(question)) - 2
                room = self.max_seq_len - question_len - 3  # [CLS] q [SEP] context [SEP]
                if room < 8:
                    raise InvalidInputError(
                        f"inputs[{i}].question",
                        f"has {question_len} tokens, too long for model {self.name!r} "
                        f"(max_seq_len {self.max_seq_len}); shorten it",
                    )
                stride = min(doc_stride, room // 2)
                windows.append(tok.encode_windows(question, context, max_length=self.max_seq_len, stride=stride))
            return windows

        windows_per_pair = await self._tokenize(encode)
        inputs = [ModelInput(w.ids, w.type_ids) for windows in windows_per_pair for w in windows]
        outputs = iter(await self.infer(inputs, deadline))
        results = []
        for (_, context), windows in zip(pairs, windows_per_pair):
            rows = [next(outputs) for _ in windows]
            found = best_answer_spans(
                [r["start_logits"] for r in rows],
                [r["end_logits"] for r in rows],
                [w.offsets for w in windows],
                [w.sequence_ids for w in windows],
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
