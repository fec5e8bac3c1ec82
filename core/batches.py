"""Model inputs, padding and batched prediction: the one way every caller feeds a graph.

A `ModelInput` is one tokenized sequence, specials included. `pad_inputs` pads a batch to its
longest row; `split_outputs` cuts a batch's outputs back into rows, token-level outputs to the
row's own length, so a row's result never carries its batch-mates' padding. `predict_inputs`
runs a whole list through a backend in length-sorted batches (little padding), one at a time or
several at once on threads, and returns the rows in input order. A backend is anything with
`run(feeds) -> outputs` on (B, T) int64 arrays: an onnxruntime bundle (`core.bundle.Bundle`) or a
PyTorch model (`training.finetune.predictor`).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

Feeds = dict[str, np.ndarray]


class Backend(Protocol):
    def run(self, feeds: Feeds) -> Feeds: ...


@dataclass
class ModelInput:
    """One tokenized sequence, specials included."""

    ids: list[int]
    type_ids: list[int] = field(default_factory=list)  # empty = all zeros

    def __len__(self) -> int:
        return len(self.ids)


def pad_inputs(batch: Sequence[ModelInput], pad_id: int) -> Feeds:
    """input_ids, attention_mask, token_type_ids: (B, T) int64, T = the batch's longest sequence."""
    longest = max(len(x) for x in batch)
    ids = np.full((len(batch), longest), pad_id, dtype=np.int64)  # (B, T)
    mask = np.zeros((len(batch), longest), dtype=np.int64)  # (B, T)
    types = np.zeros((len(batch), longest), dtype=np.int64)  # (B, T)
    for row, x in enumerate(batch):
        n = len(x.ids)
        ids[row, :n] = x.ids
        mask[row, :n] = 1
        if x.type_ids:
            types[row, :n] = x.type_ids
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def split_outputs(outputs: Feeds, lengths: Sequence[int], token_level: bool) -> list[Feeds]:
    """One dict per row; token-level outputs (B, T, ...) cut to the row's own length, in fp32."""
    rows = []
    for row, length in enumerate(lengths):
        out = {}
        for name, value in outputs.items():
            value = np.asarray(value)
            if value.dtype != np.float32 and np.issubdtype(value.dtype, np.floating):
                value = value.astype(np.float32)  # fp16 bundles: post-processing works in fp32
            out[name] = value[row, :length] if token_level and value.ndim >= 2 else value[row]
        rows.append(out)
    return rows


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices in batches of `batch_size`, longest first, so each batch pads little."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def predict_inputs(
    backend: Backend,
    inputs: Sequence[ModelInput],
    pad_id: int,
    token_level: bool,
    batch_size: int = 64,
    progress=None,
    workers: int = 1,
) -> list[Feeds]:
    """Every input's outputs, in input order; `progress(n)` is called after each batch of n.

    `workers` > 1 runs that many batches at once on threads (the backend's `run` must be
    thread-safe, as an onnxruntime session is): on CPU, several one-thread sessions' worth of
    batches in parallel use the cores better than one batch on several intra-op threads.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")

    def run(batch: np.ndarray) -> tuple[np.ndarray, list[ModelInput], Feeds]:
        rows = [inputs[i] for i in batch]
        return batch, rows, backend.run(pad_inputs(rows, pad_id))

    outputs: list[Feeds | None] = [None] * len(inputs)
    batches = sorted_batches([len(x) for x in inputs], batch_size)
    pool = ThreadPoolExecutor(workers) if workers > 1 and len(batches) > 1 else None
    try:
        for batch, rows, result in pool.map(run, batches) if pool else map(run, batches):
            for i, row in zip(batch, split_outputs(result, [len(x) for x in rows], token_level)):
                outputs[i] = row
            if progress is not None:
                progress(len(batch))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return outputs
