"""Offline scoring on a Ray cluster: the service's answers as a Ray Data `map_batches` class.

    import ray
    from core.inference.ray import BundlePredictor

    ray.init(address="auto")
    ds = ray.data.read_json("s3://bucket/reviews/")                  # rows {"text": ...}
    ds = ds.map_batches(
        BundlePredictor,
        fn_constructor_kwargs={"bundle_dir": "/models/minilm-sst2", "task_options": {"top_k": 1}},
        concurrency=8,          # actors, each with its own onnxruntime session
        batch_size=1024,        # rows per call; each call is length-sorted into model batches
    )
    ds.write_json("s3://bucket/scores/")                            # each row + "answer"

Each actor loads the bundle once and answers a batch exactly as `bert predict --bundle` does
(core.inference.answers through core.batches.predict_inputs): the `answer` column holds, per row,
the per-input result of the HTTP API. The input columns are kept, so rows carry their own ids.
This module does not import ray: the class is plain Python that Ray instantiates on its workers.

Input columns: `text` (classification also `text_pair` when `text_pair_column` names it; NER may
give `tokens`, a list of words, instead), or `question` and `context` for question answering.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.batches import predict_inputs
from core.bundle import TOKEN_LEVEL_TASKS, load_bundle
from core.inference.answers import InputError, ModelSpec, answerer_for
from core.inference.ner import join_words
from core.providers import choose_device, session_providers


class BundlePredictor:
    """`ds.map_batches(BundlePredictor, fn_constructor_kwargs={"bundle_dir": ..., "task_options": {...}})`."""

    def __init__(
        self,
        bundle_dir: str | Path,
        task_options: dict | None = None,
        text_column: str = "text",
        text_pair_column: str | None = None,
        model_batch_size: int = 64,
        device: str = "auto",
        threads: int | None = None,
        as_json: bool = False,
    ):
        """task_options: the request fields of the bundle's task (e.g. {"top_k": 1}), the API's defaults otherwise.
        model_batch_size: sequences per onnxruntime call. threads: onnxruntime intra-op threads (None: all
        the actor's cores). as_json: the answer column as JSON text (one line of `bert predict --bundle`)."""
        self.bundle = load_bundle(bundle_dir, session_providers(choose_device(device)[0]), threads)
        self.answerer = answerer_for(ModelSpec.of(self.bundle), task_options)
        self.text_column, self.text_pair_column = text_column, text_pair_column
        self.model_batch_size = model_batch_size
        self.as_json = as_json

    def inputs(self, batch: dict[str, np.ndarray]) -> list:
        """The batch's rows as the HTTP API's inputs of the bundle's task."""
        task = self.bundle.task
        if task == "question-answering":
            return [(str(q), str(c)) for q, c in zip(_column(batch, "question"), _column(batch, "context"))]
        if task == "token-classification" and self.text_column not in batch and "tokens" in batch:
            return [join_words([str(w) for w in words])[0] for words in batch["tokens"]]
        texts = [str(t) for t in _column(batch, self.text_column)]
        if task == "sequence-classification" and self.text_pair_column:
            return [[t, str(p)] for t, p in zip(texts, _column(batch, self.text_pair_column))]
        return texts

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = self.inputs(batch)
        try:
            model_inputs, state = self.answerer.encode(self.bundle.tokenizer, inputs)
        except InputError as err:
            row = "" if err.index is None else f" (row {err.index} of this batch: {inputs[err.index]!r:.80})"
            raise ValueError(f"{self.bundle.name}: {err}{row}") from None
        token_level = self.bundle.task in TOKEN_LEVEL_TASKS
        pad_id = self.bundle.tokenizer.pad_id
        outputs = predict_inputs(self.bundle, model_inputs, pad_id, token_level, self.model_batch_size)
        answers = self.answerer.answers(state, outputs)
        column = np.empty(len(answers), dtype=object)  # one Python object per row, however nested
        for i, answer in enumerate(answers):
            column[i] = json.dumps(answer, ensure_ascii=False, separators=(",", ":")) if self.as_json else answer
        return {**batch, "answer": column}


def _column(batch: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in batch:
        raise KeyError(f"the batch has no column {name!r}; its columns are {sorted(batch)}")
    return batch[name]
