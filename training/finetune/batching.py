"""Batches with little padding: group examples of similar length, pad each batch to its longest.

Padding every sequence to max_seq_len wastes most of the compute on short inputs (an SST-2
phrase is ~13 tokens, not 128). Each batch is padded to its own longest sequence, and the encoder
runs its linear layers on the real tokens only (model/bert.py TokenLayout), so padding costs
little even in shuffled batches: training uses `random_batches` (what a plain shuffled sampler
gives). `length_grouped_batches` (shuffle, take mega-batches of 50 batches, sort each by length,
cut, shuffle the batch order) pads less still, but its batches hold alike examples (CoNLL-2003:
the short lines are headlines and dates), which cost 1.5 entity-F1 points in one epoch; it is
opt-in (`--group-by-length`). Prediction sorts everything by length (core.batches, as the service
and `bert evaluate` do).
"""

from __future__ import annotations

import numpy as np

from core.batches import ModelInput, pad_inputs


def length_grouped_batches(lengths, batch_size: int, rng: np.random.Generator, group: int = 50) -> list[np.ndarray]:
    order = rng.permutation(len(lengths))
    lengths = np.asarray(lengths)
    batches = []
    mega = batch_size * group
    for begin in range(0, len(order), mega):
        chunk = order[begin : begin + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def random_batches(count: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(count)
    return [order[i : i + batch_size] for i in range(0, count, batch_size)]


def model_inputs(features: list[dict], pad_id: int) -> dict[str, np.ndarray]:
    """input_ids, attention_mask, token_type_ids: (B, T) int64, T = the batch's longest sequence."""
    return pad_inputs([ModelInput(f["input_ids"], f["token_type_ids"]) for f in features], pad_id)
