"""Sequence classification: texts (or pairs) -> model inputs, and logits -> sorted `{label, score}` lists."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.batches import ModelInput


def encode_classify(tokenizer, inputs: Sequence, max_length: int | None) -> tuple[list, list[ModelInput]]:
    """(encodings, model inputs) of texts or (text, text_pair) pairs, cut to `max_length` (None: not cut)."""
    pairs = [tuple(x) if isinstance(x, list | tuple) else x for x in inputs]
    encodings = tokenizer.encode_batch(pairs, max_length=max_length)
    return encodings, [ModelInput(e.ids, e.type_ids) for e in encodings]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the max for stability."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free form of 1 / (1 + e^-x)


def label_names(labels: list[str] | None, count: int) -> list[str]:
    """The bundle's labels, or `LABEL_i` (the Hugging Face default) when it has none."""
    if labels and len(labels) == count:
        return list(labels)
    return [f"LABEL_{i}" for i in range(count)]


def classify(
    logits: np.ndarray, labels: list[str] | None, problem_type: str | None, top_k: int | None = None
) -> list[dict]:
    """One input's logits (num_labels,) -> `[{label, score}]` sorted by score, at most `top_k` long.

    single-label: softmax; multi-label: independent sigmoids; regression: the raw value(s).
    """
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)  # (num_labels,)
    names = label_names(labels, logits.shape[0])
    if problem_type == "regression":
        scores = logits
    elif problem_type == "multi_label_classification":
        scores = sigmoid(logits)
    else:
        scores = softmax(logits)
    values = scores.tolist()  # Python floats: sorting a few labels in Python beats numpy's per-call cost
    order = sorted(range(len(values)), key=lambda i: (values[i] != values[i], -values[i]))  # stable, NaN last
    if top_k is not None:
        order = order[:top_k]
    return [{"label": names[i], "score": values[i]} for i in order]
