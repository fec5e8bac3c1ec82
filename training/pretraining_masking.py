"""MLM masking as the original BERT recipe picks it, with counter-based random numbers.

`min(max_predictions, max(1, round(0.15 * len)))` positions among the non-special tokens, each
unit replaced by [MASK] 80% of the time, by random vocabulary ids 10%, kept 10%. The unit is
chosen by `masking`:
- `token`: single tokens (the original recipe; 80/10/10 per token);
- `whole-word`: a word (a token and its following `##` pieces, or a segmenter word) is masked
  whole; words are taken in random order while they fit the budget; 80/10/10 per word;
- `span`: SpanBERT's spans of whole words: a length in words from a geometric distribution
  (p = 0.2, at most 10), a uniformly drawn first word, the span cut at a special token, at a word
  already masked or where the next word would exceed the budget; repeated until the budget is
  spent (or 4 x budget + 16 draws); 80/10/10 per span.
Shared by the static build (`training/pretraining_instances.py`) and the dynamic loader
(`training/pretraining_data.py`).
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = -100
MASK_PROB = 0.15
MASKINGS = ("token", "whole-word", "span")

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
    offset = (stream * 0x632BE59BD9B4E019 + 1) & 0xFFFFFFFFFFFFFFFF  # wraps around like uint64 arithmetic
    pos = np.arange(width, dtype=np.uint64) * _U64(0xD1B54A32D192ED03) + _U64(offset)
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
    masking: str = "token",
) -> tuple[np.ndarray, np.ndarray]:
    """Masked inputs and MLM labels for a padded batch, as the original recipe picks them.

    ids: (B, T) original ids; lengths: (B,); candidates: (B, T) bool, the maskable positions
    (not [CLS]/[SEP]/padding); word_starts: (B, T) bool, True where a new word starts (needed for
    `whole-word` and `span`, ignored for `token`). Returns (inputs (B, T), labels (B, T) with
    IGNORE_INDEX where not predicted). Randomness comes from `row_keys` (B,) only.
    """
    if masking not in MASKINGS:
        raise ValueError(f"unknown masking {masking!r}; choose one of {', '.join(MASKINGS)}")
    B, T = ids.shape
    num_to_predict = np.minimum(max_predictions, np.maximum(1, np.rint(lengths * MASK_PROB))).astype(np.int64)
    order_key = np.where(candidates, uniforms(row_keys, T, stream=0), 2.0)  # (B, T)
    if masking == "token":
        # Shuffled candidates, first k of them.
        order = np.argsort(order_key, axis=1, kind="stable")  # (B, T)
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(np.arange(T), (B, T)), axis=1)
        selected = candidates & (rank < num_to_predict[:, None])
        unit_first = np.broadcast_to(np.arange(T), (B, T))  # each token is its own unit
    elif masking == "whole-word":
        selected, unit_first = _select_whole_words(candidates, word_starts, order_key, num_to_predict)
    else:
        selected, unit_first = _select_spans(candidates, word_starts, row_keys, num_to_predict)
    # < 0.8: [MASK]; < 0.9: keep; else random ids. Drawn at the unit's first token, so a word or
    # span is replaced as a whole (for `token`, per token exactly as before).
    action = np.take_along_axis(uniforms(row_keys, T, stream=1), unit_first, axis=1)
    random_ids = np.minimum((uniforms(row_keys, T, stream=2) * vocab_size).astype(np.int64), vocab_size - 1)
    inputs = np.where(selected & (action < 0.8), mask_id, ids)
    inputs = np.where(selected & (action >= 0.9), random_ids, inputs)
    labels = np.where(selected, ids, IGNORE_INDEX)
    return inputs.astype(np.int64), labels.astype(np.int64)


def _words(candidates: np.ndarray, word_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts (B, T) bool, word index (B, T), -1 off candidates): a word never spans a special token."""
    starts = candidates & (word_starts | ~np.roll(candidates, 1, axis=1))
    starts[:, 0] &= candidates[:, 0]
    word_index = np.where(candidates, np.cumsum(starts, axis=1) - 1, -1)  # (B, T)
    return starts, word_index


def _select_whole_words(
    candidates: np.ndarray, word_starts: np.ndarray, order_key: np.ndarray, num_to_predict: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Original greedy rule over shuffled words: take a word if it still fits in the budget.

    Returns (selected (B, T), the position of each token's word start (B, T)).
    """
    B, T = candidates.shape
    starts, word_index = _words(candidates, word_starts)
    num_words = starts.sum(axis=1)
    W = int(num_words.max()) if B else 0
    unit_first = _word_first_position(starts, word_index)
    if W == 0:
        return np.zeros_like(candidates), unit_first
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
    return candidates & taken[rows, np.maximum(word_index, 0)], unit_first


def _word_first_position(starts: np.ndarray, word_index: np.ndarray) -> np.ndarray:
    """(B, T): the position where each candidate token's word starts (its own position elsewhere)."""
    T = starts.shape[1]
    positions = np.broadcast_to(np.arange(T), starts.shape)
    start_pos = np.maximum.accumulate(np.where(starts, positions, 0), axis=1)  # last word start at or before
    return np.where(word_index >= 0, start_pos, positions)


SPAN_P = 0.2  # SpanBERT's geometric parameter for span lengths in words
SPAN_MAX_WORDS = 10
_SPAN_LENGTH_CDF = np.cumsum([SPAN_P * (1 - SPAN_P) ** (k - 1) for k in range(1, SPAN_MAX_WORDS + 1)])
_SPAN_LENGTH_CDF /= _SPAN_LENGTH_CDF[-1]  # the geometric distribution cut at 10 words, renormalised


def _select_spans(
    candidates: np.ndarray, word_starts: np.ndarray, row_keys: np.ndarray, num_to_predict: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """SpanBERT's masking with whole words only; returns (selected (B, T), each token's span start (B, T))."""
    B, T = candidates.shape
    starts, word_index = _words(candidates, word_starts)
    selected = np.zeros((B, T), dtype=bool)
    unit_first = np.broadcast_to(np.arange(T), (B, T)).copy()
    attempts = 4 * int(num_to_predict.max(initial=0)) + 16
    length_draws = uniforms(row_keys, attempts, stream=3)  # (B, attempts)
    start_draws = uniforms(row_keys, attempts, stream=4)
    span_words = np.searchsorted(_SPAN_LENGTH_CDF, length_draws, side="right") + 1  # (B, attempts), 1..10
    for b in range(B):
        first = np.flatnonzero(starts[b])  # (W,) position of each word's first token
        W = len(first)
        if W == 0:
            continue
        word_len = np.bincount(word_index[b][candidates[b]], minlength=W)  # (W,)
        # a word opens a new run of maskable tokens when the token before it is not maskable
        run = np.cumsum((first == 0) | ~candidates[b, np.maximum(first - 1, 0)])  # (W,)
        taken = np.zeros(W, dtype=bool)
        budget, count = int(num_to_predict[b]), 0
        for a in range(attempts):
            if count >= budget:
                break
            w0 = min(int(start_draws[b, a] * W), W - 1)
            w = w0
            while (
                w - w0 < span_words[b, a]
                and w < W
                and not taken[w]
                and run[w] == run[w0]
                and count + word_len[w] <= budget
            ):
                taken[w] = True
                count += int(word_len[w])
                selected[b, first[w] : first[w] + word_len[w]] = True
                unit_first[b, first[w] : first[w] + word_len[w]] = first[w0]
                w += 1
    return selected, unit_first
