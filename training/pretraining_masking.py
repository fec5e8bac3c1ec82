"""MLM masking as the original BERT recipe picks it, with counter-based random numbers.

`min(max_predictions, max(1, round(0.15 * len)))` positions among the non-special tokens (whole
words together with `whole_word_mask`), each replaced by [MASK] 80% of the time, a random
vocabulary id 10%, kept 10%. Shared by the static build (`training/pretraining_instances.py`)
and the dynamic loader (`training/pretraining_data.py`).
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = -100
MASK_PROB = 0.15

# --- counter-based random numbers --------------------------------------------------------------
# Masks must not depend on which batch an instance lands in, so each random number is a hash
# of (key, position) rather than a draw from a stateful generator.

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrap-around arithmetic is intended)."""
    x = x + _GOLDEN
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def derive_key(*parts: int) -> int:
    """A 64-bit key from small non-negative integers (seed, epoch, block, ...)."""
    x = np.zeros(1, dtype=np.uint64)
    for p in parts:
        x = _mix64(x ^ np.array([p & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    return int(x[0])


def uniforms(row_keys: np.ndarray, width: int, stream: int) -> np.ndarray:
    """(B, width) uniforms in [0, 1) from per-row uint64 keys; `stream` picks an independent set."""
    pos = np.arange(width, dtype=np.uint64) * _U64(0xD1B54A32D192ED03) + _U64(stream * 0x632BE59BD9B4E019 + 1)
    x = _mix64(_mix64(row_keys[:, None] ^ pos[None, :]))  # (B, width)
    return (x >> _U64(11)).astype(np.float64) * (1.0 / (1 << 53))


def keys_for_rows(base_key: int, indices: np.ndarray) -> np.ndarray:
    return _mix64(np.asarray(indices, dtype=np.uint64) * _U64(0x9FB21C651E98DF25) ^ _U64(base_key))


# --- masking (shared by the static build and the dynamic loader) -------------------------------


def mask_batch(
    ids: np.ndarray,
    lengths: np.ndarray,
    candidates: np.ndarray,
    word_starts: np.ndarray | None,
    row_keys: np.ndarray,
    max_predictions: int,
    vocab_size: int,
    mask_id: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Masked inputs and MLM labels for a padded batch, as the original recipe picks them.

    ids: (B, T) original ids; lengths: (B,); candidates: (B, T) bool, the maskable positions
    (not [CLS]/[SEP]/padding); word_starts: (B, T) bool, True where a new word starts, or None
    for per-token masking. Returns (inputs (B, T), labels (B, T) with IGNORE_INDEX where not
    predicted). Randomness comes from `row_keys` (B,) only.
    """
    B, T = ids.shape
    num_to_predict = np.minimum(max_predictions, np.maximum(1, np.rint(lengths * MASK_PROB))).astype(np.int64)
    order_key = np.where(candidates, uniforms(row_keys, T, stream=0), 2.0)  # (B, T)
    if word_starts is None:
        # Shuffled candidates, first k of them.
        order = np.argsort(order_key, axis=1, kind="stable")  # (B, T)
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(np.arange(T), (B, T)), axis=1)
        selected = candidates & (rank < num_to_predict[:, None])
    else:
        selected = _select_whole_words(candidates, word_starts, order_key, num_to_predict)
    action = uniforms(row_keys, T, stream=1)  # < 0.8: [MASK]; < 0.9: keep; else random id
    random_ids = np.minimum((uniforms(row_keys, T, stream=2) * vocab_size).astype(np.int64), vocab_size - 1)
    inputs = np.where(selected & (action < 0.8), mask_id, ids)
    inputs = np.where(selected & (action >= 0.9), random_ids, inputs)
    labels = np.where(selected, ids, IGNORE_INDEX)
    return inputs.astype(np.int64), labels.astype(np.int64)


def _select_whole_words(
    candidates: np.ndarray, word_starts: np.ndarray, order_key: np.ndarray, num_to_predict: np.ndarray
) -> np.ndarray:
    """Original greedy rule over shuffled words: take a word if it still fits in the budget."""
    B, T = candidates.shape
    starts = candidates & (word_starts | ~np.roll(candidates, 1, axis=1))  # a word never spans a special token
    starts[:, 0] &= candidates[:, 0]
    word_index = np.where(candidates, np.cumsum(starts, axis=1) - 1, -1)  # (B, T)
    num_words = starts.sum(axis=1)
    W = int(num_words.max()) if B else 0
    if W == 0:
        return np.zeros_like(candidates)
    rows = np.broadcast_to(np.arange(B)[:, None], (B, T))
    flat = rows[candidates] * W + word_index[candidates]
    word_len = np.bincount(flat, minlength=B * W).reshape(B, W)  # (B, W)
    word_key = np.full((B, W), 2.0)
    word_key[rows[starts], word_index[starts]] = order_key[starts]
    order = np.argsort(word_key, axis=1, kind="stable")  # (B, W) words in shuffled order
    sorted_len = np.take_along_axis(word_len, order, axis=1)
    taken_sorted = np.zeros((B, W), dtype=bool)
    count = np.zeros(B, dtype=np.int64)
    for r in range(W):
        fits = (sorted_len[:, r] > 0) & (count + sorted_len[:, r] <= num_to_predict)
        taken_sorted[:, r] = fits
        count += np.where(fits, sorted_len[:, r], 0)
    taken = np.zeros((B, W), dtype=bool)
    np.put_along_axis(taken, order, taken_sorted, axis=1)
    return candidates & taken[rows, np.maximum(word_index, 0)]
